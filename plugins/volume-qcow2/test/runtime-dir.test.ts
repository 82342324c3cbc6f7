import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BackupManager, ChunkedBackupService, MemoryObjectStore, RepositoryCatalog } from '@cairn/core';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, disposeDriver, missingQemu, pattern, tempDir } from './helpers.js';

// Where the daemon's unix sockets go (`<runtimeDir>/cairn-qsd-XXXXXX/qmp.sock`, at most 107 bytes).

const savedTmpdir = process.env.TMPDIR;
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  if (savedTmpdir === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = savedTmpdir;
  for (const fn of cleanup.splice(0)) await fn().catch(() => {});
});

/** A directory too deep for the daemon's socket paths (over 107 bytes with `cairn-qsd-XXXXXX/qmp.sock`). */
async function deepDir(): Promise<string> {
  const base = await tempDir('cairn-deep-');
  cleanup.push(() => rm(base, { recursive: true, force: true }));
  const deep = join(base, 'd'.repeat(60), 'e'.repeat(60));
  await mkdir(deep, { recursive: true });
  return deep;
}

describe.skipIf(missingQemu.length > 0)(`the daemon's runtime directory (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('with runtimeDir unset and a $TMPDIR too deep for the sockets, the driver is built, lists and shows volumes, and a backup runs with the daemon under /tmp', async () => {
    const directory = await tempDir();
    process.env.TMPDIR = await deepDir();
    const d = new Qcow2VolumeDriver({ directory });
    cleanup.push(() => disposeDriver(d));
    const v = await d.createVolume({ size: 4 * MiB, name: 'disk' });
    expect((await d.listVolumes()).map((x) => x.id)).toEqual([v.id]);
    expect(await d.getVolume(v.id)).toMatchObject({ id: v.id, status: 'available' });
    expect(await d.daemonPid()).toBeUndefined(); // nothing above needed the daemon

    const w = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await w.device.write(0, pattern(MiB, 1));
    const cmdline = (await readFile(`/proc/${await d.daemonPid()}/cmdline`, 'utf8')).split('\0');
    expect(cmdline.find((a) => a.includes('qmp.sock'))).toMatch(/^socket,id=qmp0,path=\/tmp\/cairn-qsd-[^/]+\/qmp\.sock,/);
    await d.detach(w.id);

    const service = await ChunkedBackupService.open(new MemoryObjectStore('mem'), { name: 'repo', workers: 0, init: { chunkSize: 256 * 1024, packSize: 4 * MiB, kdf: { N: 1024, r: 8, p: 1 } } });
    const manager = new BackupManager({ volumes: d, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    expect(await manager.backup({ volumeId: v.id })).toMatchObject({ status: 'available' });
  });

  it('a configured runtimeDir too deep is INVALID_INPUT naming runtimeDir when the driver is built, before its directory is made', async () => {
    const deep = await deepDir();
    const directory = join(await tempDir(), 'not-yet');
    cleanup.push(() => rm(join(directory, '..'), { recursive: true, force: true }));
    expect(() => new Qcow2VolumeDriver({ directory, runtimeDir: deep })).toThrow(
      expect.objectContaining({ code: 'INVALID_INPUT', message: expect.stringContaining(`runtimeDir ${deep}`), details: expect.objectContaining({ directory: deep, maxBytes: 107 }) }),
    );
    // Also when $TMPDIR is short: a configured directory is used as given, never replaced.
    process.env.TMPDIR = '/tmp';
    expect(() => new Qcow2VolumeDriver({ directory, runtimeDir: deep })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
    await expect(readFile(directory)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a configured runtimeDir that is not a non-empty string is INVALID_INPUT naming runtimeDir when the driver is built (an empty one put the daemon dir in the working directory; a number threw a TypeError)', () => {
    for (const bad of ['', '  ', 5, null]) {
      expect(() => new Qcow2VolumeDriver({ directory: '/tmp/x', runtimeDir: bad as string })).toThrow(
        expect.objectContaining({ code: 'INVALID_INPUT', message: expect.stringContaining('runtimeDir') }),
      );
    }
  });
});
