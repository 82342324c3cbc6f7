import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'vitest';
import { isCairnError, type ErrorCode } from '@cairn/core';

const run = promisify(execFile);

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
