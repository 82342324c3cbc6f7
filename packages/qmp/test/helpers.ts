import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'vitest';
import { isCairnError, type ErrorCode } from '@cairn/core';
import { processAlive } from '../src/runtime-dirs.js';

const run = promisify(execFile);

/**
 * Whether process `pid` is gone within `ms` (polled every 50 ms, on a monotonic clock: a step of
 * the wall clock neither cuts nor stretches the wait; no assertion on the time itself).
 */
export async function exitsWithin(pid: number, ms: number): Promise<boolean> {
  for (const end = performance.now() + ms; performance.now() < end; await new Promise((r) => setTimeout(r, 50))) if (!processAlive(pid)) return true;
  return !processAlive(pid);
}

/** A fresh short temp dir under /tmp (unix socket paths must stay under 108 bytes). */
export const tempDir = (): Promise<string> => mkdtemp('/tmp/cairn-qmpt-');

export const removeDir = (dir: string | undefined): Promise<void> => (dir ? rm(dir, { recursive: true, force: true }) : Promise.resolve());

/** Creates a qcow2 image of `size` bytes with qemu-img and returns its path. */
export async function createQcow2(dir: string, name: string, size = 64 * 1024 * 1024): Promise<string> {
  const path = join(dir, name);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', path, String(size)]);
  return path;
}

export interface ImageBitmap {
  name: string;
  flags: string[];
  granularity: number;
}

/** Bitmaps recorded in a qcow2 file, from `qemu-img info -U --output=json`. */
export async function imageBitmaps(path: string): Promise<ImageBitmap[]> {
  const { stdout } = await run('qemu-img', ['info', '-U', '--output=json', path]);
  const info = JSON.parse(stdout) as { 'format-specific'?: { data?: { bitmaps?: ImageBitmap[] } } };
  return info['format-specific']?.data?.bitmaps ?? [];
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Asserts that `promise` rejects with a CairnError of `code`, and returns the error. */
export async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<{ code: string; details?: Record<string, unknown> }> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected a rejection with ${code}`).toBeDefined();
  expect(isCairnError(err), `not a CairnError: ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe(code);
  return err as { code: string; details?: Record<string, unknown> };
}

/** Extra arguments adding a second QMP monitor on a unix socket `path`. */
export const unixMonitorArgs = (id: string, path: string): string[] => [
  '--chardev',
  `socket,id=${id},path=${path},server=on,wait=off`,
  '--monitor',
  `chardev=${id}`,
];

/** Extra arguments adding a QMP monitor on 127.0.0.1:`port`. */
export const tcpMonitorArgs = (id: string, port: number): string[] => [
  '--chardev',
  `socket,id=${id},host=127.0.0.1,port=${port},server=on,wait=off`,
  '--monitor',
  `chardev=${id}`,
];

/** A command a fake QMP peer received. */
export interface QmpCommand {
  execute: string;
  id: string;
  arguments?: unknown;
}

/** Fake QMP peers on unix sockets in one temp dir, closed together (`open` in beforeAll, `close` in afterAll). */
export class FakeQmpPeers {
  private dir = '';
  private readonly servers: net.Server[] = [];

  async open(): Promise<void> {
    this.dir = await tempDir();
  }

  async close(): Promise<void> {
    for (const s of this.servers) s.close();
    await removeDir(this.dir);
  }

  /**
   * A peer that greets as qemu 7.2 does, then hands every command it receives (whole lines,
   * however the bytes arrive) to `answer` with the connection's socket. `sockets`: its connections.
   * `greeting`: a line sent instead of qemu's greeting.
   */
  async listen(answer: (m: QmpCommand, s: net.Socket) => void, greeting?: string): Promise<{ path: string; sockets: net.Socket[] }> {
    const path = join(this.dir, `q${this.servers.length}.sock`);
    const sockets: net.Socket[] = [];
    const server = net.createServer((s) => {
      sockets.push(s);
      s.on('error', () => undefined);
      s.write(`${greeting ?? JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: '' }, capabilities: [] } })}\r\n`);
      let buffered = '';
      s.on('data', (b) => {
        buffered += String(b);
        for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (line.trim() !== '') answer(JSON.parse(line) as QmpCommand, s);
        }
      });
    });
    this.servers.push(server);
    await new Promise<void>((resolve) => server.listen(path, resolve));
    return { path, sockets };
  }
}

/** Writes QMP's success reply to command `m`. */
export const answerReturn = (s: net.Socket, m: QmpCommand, value: unknown = {}): void => void s.write(`${JSON.stringify({ return: value, id: m.id })}\r\n`);
