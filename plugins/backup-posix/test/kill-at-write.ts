/**
 * Scaffolding of the crash tests that SIGKILL a child after its k-th store write
 * (fixtures/kill-at-write-child.mjs): the child, and volumes of whole incompressible chunks.
 */
import { createCipheriv } from 'node:crypto';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { MemoryVolumeDriver } from '@cairn/core';
import { PACKAGE_DIR, spawnChild } from './helpers.js';

const CHILD = join(PACKAGE_DIR, 'test', 'fixtures', 'kill-at-write-child.mjs');
/** The chunk size of the crash tests' repositories. */
export const CHUNK = 64 * 1024;
/** Their volumes' size: 32 chunks. */
export const SIZE = 32 * CHUNK;

/** Incompressible content of chunk `i` under `seed`. */
export function chunkData(seed: number, i: number): Buffer {
  const key = Buffer.alloc(32);
  key.writeUInt32LE(seed);
  key.writeUInt32LE(i, 4);
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(CHUNK));
}

/** Writes chunks [from, to) of `seed` into the volume. */
export async function writeChunks(volumes: MemoryVolumeDriver, volumeId: string, seed: number, from: number, to: number): Promise<void> {
  const a = await volumes.attach({ kind: 'volume', id: volumeId }, 'rw');
  for (let i = from; i < to; i++) await a.device.write(i * CHUNK, chunkData(seed, i));
  await volumes.detach(a.id);
}

/** The volume's SIZE bytes. */
export async function readVolume(volumes: MemoryVolumeDriver, volumeId: string): Promise<Buffer> {
  const a = await volumes.attach({ kind: 'volume', id: volumeId }, 'ro');
  const b = Buffer.from(await a.device.read(0, SIZE));
  await volumes.detach(a.id);
  return b;
}

/**
 * Runs the child's operation (`args`: directory, op and its options) killed after its
 * `killAfter`-th write (0: never). Resolves whether it was killed, and, when it ran to its end,
 * the list of its writes.
 */
export async function runKilledAfter(args: Record<string, unknown>, killAfter: number): Promise<{ killed: boolean; log?: string[] }> {
  const child = spawnChild({ ...args, killAfter }, CHILD);
  const exit = await child.exited;
  if (exit.signal === 'SIGKILL') return { killed: true };
  expect(exit.code).toBe(0);
  return { killed: false, log: child.lines.find((l) => l.event === 'done')!.log as string[] };
}
