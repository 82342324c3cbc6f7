import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, readdir, rm, stat, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { newId } from '@cairn/core';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { UNOWNED_VIEWS_GRACE_MS } from '../src/views-dir.js';
import { MiB, missingQemu, pattern, qemuImg, tempDir } from './helpers.js';

// What a daemon start reclaims in `views/` that names no owner (views-dir.ts): overlays of the
// older flat layout and directories without an owner file go once they are stale and no process
// holds them by qemu's lock; one a running qemu-storage-daemon or another live instance holds stays.

const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** Sets the modification time of each path to past the grace period. */
async function makeStale(...paths: string[]): Promise<void> {
  const when = new Date(Date.now() - UNOWNED_VIEWS_GRACE_MS - 60_000);
  for (const p of paths) await utimes(p, when, when);
}

function createOverlay(path: string): void {
  const made = qemuImg(['create', '-q', '-f', 'qcow2', path, String(1 * MiB)]);
  expect(made.status, made.stderr).toBe(0);
}

/**
 * Whether some process holds qemu's locks on `path`: an open file description lock (OFDLCK, as
 * qemu takes) on its inode in /proc/locks. Read from /proc, not probed with `qemu-img info`: that
 * probe takes qemu's shared locks itself for an instant, and a daemon starting in that instant
 * fails its own open ("Failed to get "write" lock"), as a CI run saw.
 */
async function lockedByOther(path: string): Promise<boolean> {
  const { ino } = await stat(path);
  return (await readFile('/proc/locks', 'utf8')).split('\n').some((l) => /\bOFDLCK\b/.test(l) && l.split(/\s+/).some((f) => f.endsWith(`:${ino}`)));
}

/** A qemu-storage-daemon of its own (no Cairn) that has `path` open as a writable qcow2 node, as an older Cairn's daemon has its overlays. */
async function daemonHolding(path: string): Promise<ChildProcess> {
  const daemon = spawn('qemu-storage-daemon', ['--blockdev', `driver=file,node-name=f,filename=${path}`, '--blockdev', 'driver=qcow2,node-name=q,file=f'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  daemon.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  // Waited for until it holds the overlay or ends, not for a fixed time: on a loaded machine its
  // start took more than 5 s (the test's own timeout bounds the wait).
  while (!(await lockedByOther(path))) {
    if (daemon.exitCode !== null || daemon.signalCode !== null) throw new Error(`qemu-storage-daemon ended (${daemon.exitCode ?? daemon.signalCode}) before it held ${path}: ${stderr}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return daemon;
}

describe.skipIf(missingQemu.length > 0)(`a daemon start and entries of views/ that name no owner (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('removes a stale flat-layout overlay and a stale owner-less views directory, and keeps fresh ones and those a running qemu-storage-daemon or another live instance holds open', async () => {
    const directory = await tempDir();
    dirs.push(directory);
    const views = join(directory, 'views');
    const a = new Qcow2VolumeDriver({ directory });
    const b = new Qcow2VolumeDriver({ directory });
    let other: ChildProcess | undefined;
    try {
      // b: a live instance with a view, whose directory lost its owner file and is old.
      const v = await b.createVolume({ size: 4 * MiB });
      const w = await b.attach({ kind: 'volume', id: v.id }, 'rw');
      await w.device.write(0, pattern(4096, 1));
      const snap = await b.createSnapshot(v.id, 'view');
      const [bDir] = (await readdir(views)).filter((n) => !n.endsWith('.qcow2'));
      await unlink(join(views, bDir!, 'owner.json'));
      const bFiles = (await readdir(join(views, bDir!))).map((n) => join(views, bDir!, n));
      await makeStale(...bFiles, join(views, bDir!));

      const flat = { stale: join(views, `${newId()}.qcow2`), fresh: join(views, `${newId()}.qcow2`), held: join(views, `${newId()}.qcow2`) };
      for (const p of Object.values(flat)) createOverlay(p);
      other = await daemonHolding(flat.held);
      const bare = { stale: join(views, newId()), fresh: join(views, newId()) };
      for (const d of Object.values(bare)) {
        await mkdir(d);
        createOverlay(join(d, `${newId()}.qcow2`));
      }
      await makeStale(flat.stale, flat.held, ...(await readdir(bare.stale)).map((n) => join(bare.stale, n)), bare.stale);

      const r = await a.createVolume({ size: 1 * MiB }).then((x) => a.attach({ kind: 'volume', id: x.id }, 'ro')); // starts a's daemon
      const left = await readdir(views);
      const name = (p: string): string => p.slice(views.length + 1);
      expect(left).toContain(bDir);
      expect(left).toEqual(expect.arrayContaining([name(flat.fresh), name(flat.held), name(bare.fresh)]));
      expect(left).not.toContain(name(flat.stale));
      expect(left).not.toContain(name(bare.stale));
      expect(left).toHaveLength(5); // a's own directory and the four kept above

      await w.device.write(0, pattern(4096, 2));
      const view = await b.attach({ kind: 'snapshot', id: snap.id }, 'ro');
      expect(await view.device.read(0, 4096)).toEqual(pattern(4096, 1)); // b's view still reads its point in time
      await b.detach(view.id);
      await a.detach(r.id);
    } finally {
      other?.kill('SIGKILL');
      await a.close();
      await b.close();
    }
  });
});
