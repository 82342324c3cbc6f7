// A caller killed between making its daemon's temp dir and writing the dir's `owner` file (or a
// daemon whose owner file could not be written) left a `cairn-qsd-XXXXXX` dir that no sweep ever
// removed: owner-less dirs were all skipped, since one may be being set up right now. The rule
// now (runtime-dirs.ts): an owner-less dir quiet for OWNERLESS_GRACE_MS with no live socket goes;
// a fresh one, or one where a daemon still serves, stays.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { QemuStorageDaemon } from '../src/index.js';
import { DIR_PREFIX, KEPT_DIR_PREFIX, OWNERLESS_GRACE_MS, removeStaleDirs } from '../src/runtime-dirs.js';
import { removeDir, tempDir } from './helpers.js';

let parent: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  parent = await tempDir();
});

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

afterAll(async () => {
  await removeDir(parent);
});

/** Runs a real qemu-storage-daemon serving QMP on `<dir>/qmp.sock` (as start() lays it out, but with no owner file); resolves once the socket exists. */
async function daemonIn(dir: string): Promise<ChildProcess> {
  const sock = join(dir, 'qmp.sock');
  const child = spawn('qemu-storage-daemon', ['--chardev', `socket,id=m0,path=${sock},server=on,wait=off`, '--monitor', 'chardev=m0'], { stdio: 'ignore' });
  children.push(child);
  await vi.waitFor(() => expect(existsSync(sock)).toBe(true), { timeout: 20_000 });
  return child;
}

/** An owner-less daemon dir as a crash leaves it: a log and the socket of a daemon killed with SIGKILL. */
async function crashedOwnerlessDir(): Promise<string> {
  const dir = await mkdtemp(join(parent, DIR_PREFIX));
  await writeFile(join(dir, 'daemon.log'), 'log\n');
  const child = await daemonIn(dir);
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  expect(existsSync(join(dir, 'qmp.sock'))).toBe(true); // SIGKILL leaves the socket file
  return dir;
}

/** Well past the grace (10 minutes), and well within it. */
const AN_HOUR = 60 * 60_000;
const A_MINUTE = 60_000;

/** Sets the mtime of everything in `dir`, then of `dir` itself, to `ageMs` ago. */
async function age(dir: string, ageMs: number): Promise<void> {
  const when = new Date(Date.now() - ageMs);
  for (const entry of await readdir(dir)) await utimes(join(dir, entry), when, when);
  await utimes(dir, when, when);
}

describe('stale-dir sweep of owner-less daemon dirs', () => {
  it('removes one quiet for longer than the grace whose daemon is gone, at the next start()', async () => {
    const dir = await crashedOwnerlessDir();
    await age(dir, AN_HOUR);
    const daemon = await QemuStorageDaemon.start({ tmpParent: parent });
    try {
      expect(existsSync(dir)).toBe(false);
      expect(existsSync(daemon.dir)).toBe(true);
    } finally {
      await daemon.stop();
    }
  });

  it('leaves the dir of a keepDir daemon alone, however old, even when its owner file was never written (it is the caller\'s)', async () => {
    const sub = join(parent, 'kept');
    await mkdir(sub);
    const daemon = await QemuStorageDaemon.start({ tmpParent: sub, keepDir: true });
    await rm(join(daemon.dir, 'owner')); // as when writeOwner failed
    await daemon.stop();
    expect(existsSync(join(daemon.dir, 'daemon.log'))).toBe(true);
    await age(daemon.dir, AN_HOUR);
    expect(await removeStaleDirs(sub)).toEqual([]);
    const next = await QemuStorageDaemon.start({ tmpParent: sub }); // sweeps first
    await next.stop();
    expect(existsSync(join(daemon.dir, 'daemon.log'))).toBe(true);
    // Named apart, with a prefix as long (the socket path limit is the same for both).
    expect(daemon.dir.startsWith(join(sub, KEPT_DIR_PREFIX))).toBe(true);
    expect(KEPT_DIR_PREFIX.length).toBe(DIR_PREFIX.length);
    await removeDir(sub);
  });

  it('leaves one alone that is within the grace (being set up now, or just left)', async () => {
    expect(OWNERLESS_GRACE_MS).toBeGreaterThan(A_MINUTE);
    expect(OWNERLESS_GRACE_MS).toBeLessThan(AN_HOUR);
    const dir = await crashedOwnerlessDir();
    await age(dir, A_MINUTE);
    expect(await removeStaleDirs(parent)).toEqual([]);
    expect(existsSync(dir)).toBe(true);
    // One entry written recently keeps an otherwise old dir too.
    await age(dir, AN_HOUR);
    const recent = new Date();
    await utimes(join(dir, 'daemon.log'), recent, recent);
    expect(await removeStaleDirs(parent)).toEqual([]);
    expect(existsSync(dir)).toBe(true);
    await removeDir(dir);
  });

  it('leaves one alone, however old, where a daemon still serves its socket, even a stopped one', async () => {
    const dir = await mkdtemp(join(parent, DIR_PREFIX));
    const child = await daemonIn(dir);
    await age(dir, AN_HOUR);
    expect(await removeStaleDirs(parent)).toEqual([]);
    expect(existsSync(join(dir, 'qmp.sock'))).toBe(true);
    child.kill('SIGSTOP');
    try {
      expect(await removeStaleDirs(parent)).toEqual([]);
      expect(existsSync(join(dir, 'qmp.sock'))).toBe(true);
    } finally {
      child.kill('SIGCONT');
    }
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    expect(await removeStaleDirs(parent)).toEqual([dir]); // once it is gone, the dir goes
  });

  it('judging a live daemon\'s owner-less dir asks its QMP socket, not its NBD server (which would log a failed negotiation)', async () => {
    const sub = join(parent, 'live-nbd');
    await mkdir(sub);
    const daemon = await QemuStorageDaemon.start({ tmpParent: sub });
    try {
      await daemon.qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: join(daemon.dir, 'nbd.sock') } } });
      // More sockets beside it that count who connects, named to be listed before qmp.sock (node's
      // readdir sorts names, as nbd.sock is): none may be asked while the QMP socket answers.
      let asked = 0;
      const paths = Array.from({ length: 2 }, (_, i) => join(daemon.dir, `a${i}.sock`));
      let seen: (() => void) | undefined;
      const others = await Promise.all(
        paths.map(async (path) => {
          const server = net.createServer((c) => {
            asked++;
            seen?.();
            c.destroy();
          });
          await new Promise<void>((resolve) => server.listen(path, resolve));
          return server;
        }),
      );
      /** Connects to each socket once and waits until it was accepted: connections are accepted in order, so any earlier one (the sweep's) was counted by then. */
      const flush = async (): Promise<void> => {
        for (const path of paths) {
          const accepted = new Promise<void>((resolve) => (seen = resolve));
          const c = net.createConnection({ path });
          c.on('error', () => undefined);
          await accepted;
          c.destroy();
        }
      };
      await rm(join(daemon.dir, 'owner')); // as if it could not be written
      await age(daemon.dir, AN_HOUR);
      try {
        expect(await removeStaleDirs(sub)).toEqual([]);
        expect(existsSync(daemon.dir)).toBe(true);
        await flush();
        expect(asked - paths.length, 'connections the sweep made to sockets other than qmp.sock').toBe(0);
      } finally {
        for (const server of others) server.close();
      }
      await daemon.stop(); // then the log holds all the daemon wrote
      expect(await daemon.readLog()).not.toMatch(/negotiation failed/);
    } finally {
      await daemon.stop();
    }
  });

  it('leaves alone an old owner-less dir whose name mkdtemp would not make', async () => {
    const dir = join(parent, `${DIR_PREFIX}not-ours`);
    await mkdir(dir);
    await age(dir, AN_HOUR);
    expect(await removeStaleDirs(parent)).toEqual([]);
    expect(existsSync(dir)).toBe(true);
    await removeDir(dir);
  });
});
