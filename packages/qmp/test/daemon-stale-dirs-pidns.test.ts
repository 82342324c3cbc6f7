// The stale-dir sweep removed a dir with an owner file as soon as neither recorded pid was alive
// here. A daemon started from another pid namespace (a container sharing the temp parent) has
// pids that do not exist here, so any start() on this side removed a live daemon's dir (its
// qmp.sock, nbd.sock and log). Now an owner dir also needs its sockets dead (QMP first), and an
// owner of another pid namespace (or not recorded) is judged as an owner-less dir: quiet for the
// grace as well (its daemon may be starting, its sockets not made yet).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readlinkSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { QemuStorageDaemon } from '../src/index.js';
import { DIR_PREFIX, OWNERLESS_GRACE_MS, removeStaleDirs } from '../src/runtime-dirs.js';
import { removeDir, tempDir } from './helpers.js';

const sweepFixture = fileURLToPath(new URL('./fixtures/sweep-stale-dirs.mjs', import.meta.url));
const UNSHARE = ['--pid', '--fork', '--mount-proc'];
const ownNamespace = readlinkSync('/proc/self/ns/pid');

/** Whether `unshare --pid --fork --mount-proc` runs node in a pid namespace of its own here (needs root or user namespaces). */
function unshareWorks(): boolean {
  const probe = spawnSync('unshare', [...UNSHARE, process.execPath, '-e', 'process.stdout.write(require("fs").readlinkSync("/proc/self/ns/pid"))'], { encoding: 'utf8' });
  return probe.status === 0 && /^pid:\[\d+\]$/.test(probe.stdout) && probe.stdout !== ownNamespace;
}
// Under CI (a machine like this one, where it works) the tests run, so a lost unshare fails them instead of hiding them.
const canUnshare = process.env.CI === 'true' || unshareWorks();
if (!canUnshare) console.warn('daemon-stale-dirs-pidns: skipping the tests from another pid namespace: `unshare --pid --fork --mount-proc` does not work here');

/** Runs the sweep over `parent` in a new pid namespace and returns what it removed. */
function sweepFromAnotherNamespace(parent: string): string[] {
  const run = spawnSync('unshare', [...UNSHARE, process.execPath, sweepFixture, parent], { encoding: 'utf8' });
  expect(run.status, run.stderr).toBe(0);
  const out = JSON.parse(run.stdout) as { removed: string[]; pidNamespace: string };
  expect(out.pidNamespace).not.toBe(ownNamespace);
  return out.removed;
}

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

/** A pid no process has now: that of a child that has exited and been reaped. */
async function deadPid(): Promise<number> {
  const child = spawn('true', { stdio: 'ignore' });
  await new Promise((r) => child.once('exit', r));
  return child.pid!;
}

/** A daemon dir as start() lays it out, with a real qemu-storage-daemon serving `qmp.sock`, and the owner file given. */
async function ownedDaemonDir(under: string, owner: (daemonPid: number) => Promise<object>): Promise<{ dir: string; child: ChildProcess }> {
  const dir = await mkdtemp(join(under, DIR_PREFIX));
  const sock = join(dir, 'qmp.sock');
  const child = spawn('qemu-storage-daemon', ['--chardev', `socket,id=m0,path=${sock},server=on,wait=off`, '--monitor', 'chardev=m0'], { stdio: 'ignore' });
  children.push(child);
  await vi.waitFor(() => expect(existsSync(sock)).toBe(true), { timeout: 20_000 });
  await writeFile(join(dir, 'owner'), JSON.stringify(await owner(child.pid!)));
  return { dir, child };
}

/** Sets `dir` and everything directly in it as last modified before the grace. */
async function aged(dir: string): Promise<void> {
  const then = new Date(Date.now() - OWNERLESS_GRACE_MS - 60_000);
  for (const entry of await readdir(dir)) await utimes(join(dir, entry), then, then);
  await utimes(dir, then, then);
}

async function killed(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

describe('stale-dir sweep of dirs with an owner file whose pids are gone here', () => {
  it('records the pid namespace in the owner file', async () => {
    const sub = join(parent, 'ns-field');
    await mkdir(sub);
    const daemon = await QemuStorageDaemon.start({ tmpParent: sub });
    try {
      const owner = JSON.parse(await readFile(join(daemon.dir, 'owner'), 'utf8')) as Record<string, unknown>;
      expect(`pid:[${owner.pidNamespace}]`).toBe(ownNamespace);
      expect(owner).toMatchObject({ pid: process.pid, daemonPid: daemon.pid });
    } finally {
      await daemon.stop();
    }
  });

  it('an old owner file (no pidNamespace) with dead pids: kept while its QMP socket is served or it is within the grace, removed once neither', async () => {
    const sub = join(parent, 'old-owner');
    await mkdir(sub);
    const gone = await deadPid();
    const { dir, child } = await ownedDaemonDir(sub, async () => ({ pid: gone, daemonPid: await deadPid() }));
    await aged(dir);
    expect(await removeStaleDirs(sub)).toEqual([]);
    expect(existsSync(join(dir, 'qmp.sock'))).toBe(true);
    await killed(child); // the socket file stays, refusing connections
    await utimes(dir, new Date(), new Date()); // young again
    expect(await removeStaleDirs(sub)).toEqual([]);
    await aged(dir);
    expect(await removeStaleDirs(sub)).toEqual([dir]);
  });

  it('a dir of another pid namespace whose daemon has not made its sockets yet (starting) is left alone within the grace', async () => {
    const sub = join(parent, 'foreign-starting');
    await mkdir(sub);
    const dir = await mkdtemp(join(sub, DIR_PREFIX));
    await writeFile(join(dir, 'owner'), JSON.stringify({ pid: await deadPid(), daemonPid: await deadPid(), pidNamespace: 1 }));
    expect(await removeStaleDirs(sub)).toEqual([]);
    await aged(dir);
    expect(await removeStaleDirs(sub)).toEqual([dir]);
  });

  it('a dir of this pid namespace whose pids are gone is removed at once when no socket is served', async () => {
    const sub = join(parent, 'own-dead');
    await mkdir(sub);
    const { dir, child } = await ownedDaemonDir(sub, async () => ({ pid: await deadPid(), daemonPid: await deadPid(), pidNamespace: Number(/\d+/.exec(ownNamespace)![0]) }));
    expect(await removeStaleDirs(sub)).toEqual([]);
    await killed(child);
    expect(await removeStaleDirs(sub)).toEqual([dir]);
  });

  it.skipIf(!canUnshare)('a sweep from another pid namespace leaves a live daemon\'s dir alone, and the daemon keeps serving', async () => {
    const sub = join(parent, 'from-other-ns');
    await mkdir(sub);
    const daemon = await QemuStorageDaemon.start({ tmpParent: sub });
    try {
      await daemon.qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: join(daemon.dir, 'nbd.sock') } } });
      expect(sweepFromAnotherNamespace(sub)).toEqual([]);
      for (const name of ['qmp.sock', 'nbd.sock', 'daemon.log', 'owner']) expect(existsSync(join(daemon.dir, name)), name).toBe(true);
      expect(await daemon.qmp.execute('query-version')).toHaveProperty('qemu');
      // The QMP socket answered, so the NBD server was not asked (it would log a failed negotiation).
      await daemon.stop();
      expect(await daemon.readLog()).not.toMatch(/negotiation failed/);
    } finally {
      await daemon.stop();
    }
  });

  it.skipIf(!canUnshare)('a dir of another pid namespace is judged by its sockets alone, though its pids run here', async () => {
    const sub = join(parent, 'foreign-owner');
    await mkdir(sub);
    // Recorded by an owner in the sweep's namespace would be: pids that exist (this process), a namespace not ours.
    const { dir, child } = await ownedDaemonDir(sub, async (daemonPid) => ({ pid: process.pid, daemonPid, pidNamespace: 1 }));
    expect(await removeStaleDirs(sub)).toEqual([]); // seen from here: another namespace, socket served
    expect(sweepFromAnotherNamespace(sub)).toEqual([]);
    await killed(child);
    await aged(dir);
    expect(await removeStaleDirs(sub)).toEqual([dir]); // this process runs, but its pid means nothing for that namespace
  });

  it.skipIf(!canUnshare)('a sweep from another pid namespace still removes a dir whose daemon is gone', async () => {
    const sub = join(parent, 'dead-other-ns');
    await mkdir(sub);
    const { dir, child } = await ownedDaemonDir(sub, async (daemonPid) => ({ pid: process.pid, daemonPid, pidNamespace: Number(/\d+/.exec(ownNamespace)![0]) }));
    expect(sweepFromAnotherNamespace(sub)).toEqual([]);
    await killed(child);
    expect(sweepFromAnotherNamespace(sub)).toEqual([]); // within the grace: from there, it may be starting
    await aged(dir);
    expect(sweepFromAnotherNamespace(sub)).toEqual([dir]);
  });
});
