import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { TmpfsMounts } from '@cairn/conformance';
import { afterAll, afterEach, beforeAll, describe, it } from 'vitest';

const builtFileLock = fileURLToPath(new URL('../dist/file-lock.js', import.meta.url));
const NOBODY = 65534;

/**
 * In a fresh process (so that `env` may force the flock(1) fallback), and as `uid` when given:
 * takes a shared, then an exclusive lock on the file with tryLock and prints, for each, the mode
 * held, how its descriptor was opened (r, w, rw: /proc/self/fdinfo), and whether another process
 * (flock(1) without waiting) gets a shared and an exclusive lock meanwhile: free or held. A failed
 * try prints its error code, or null.
 */
async function lockReport(path: string, env: Record<string, string>, uid?: number): Promise<string> {
  const script = `import { tryLock } from ${JSON.stringify(builtFileLock)};
    import { spawnSync } from 'node:child_process';
    import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
    const path = process.argv[1];
    // Modules loaded, the child becomes \`uid\` (the checkout may sit where that user cannot read).
    if (process.argv[2]) { process.setgroups([]); process.setgid(Number(process.argv[2])); process.setuid(Number(process.argv[2])); }
    const other = (m) => (spawnSync('flock', ['--nonblock', m, path, 'true']).status === 0 ? 'free' : 'held');
    const fds = () => readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync('/proc/self/fd/' + fd) === path; } catch { return false; } });
    const access = (fd) => ['r', 'w', 'rw'][parseInt(/flags:\\s*(\\d+)/.exec(readFileSync('/proc/self/fdinfo/' + fd, 'utf8'))[1], 8) & 3];
    const out = [];
    for (const mode of ['shared', 'exclusive']) {
      const lock = await tryLock(path, mode, 'file').catch((e) => e.code);
      if (!lock || typeof lock === 'string') { out.push(String(lock)); continue; }
      out.push(lock.mode, fds().map(access).join(','), other('-s'), other('-x'));
      await lock.release();
    }
    // A shared lock converted to exclusive (ImageLocks does when a writer joins readers).
    const up = await tryLock(path, 'shared', 'file').catch((e) => e.code);
    if (up && typeof up !== 'string') {
      out.push('upgrade', String(await up.upgrade()), fds().map(access).join(','), other('-s'), other('-x'));
      await up.release();
    }
    console.log(out.join(' '));`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script, path, ...(uid === undefined ? [] : [String(uid)])], {
    env: { ...process.env, ...env },
    cwd: dirname(path),
  });
  return stdout.trim();
}

const LOCKERS: { name: string; env: Record<string, string> }[] = [
  { name: 'fs-ext', env: {} },
  { name: 'the flock(1) fallback', env: { CAIRN_VOLUME_FILE_NO_FS_EXT: '1' } },
];

/**
 * Contract (file-lock.ts, lockFile): a lock file is never created. For an exclusive lock (also a
 * shared one upgraded) it is opened read-write, so that an exclusive flock(2) also works on NFS,
 * where Linux emulates it with fcntl(2) locks that need a file open for writing (man 2 flock);
 * where open(2) refuses writing (no write permission, a read-only mount, an immutable file) it is
 * opened read-only and the lock is still taken, as flock(2) allows on a local file system. A shared
 * lock is always on a read-only descriptor (a read lock needs no more), so a reader holds no
 * writable descriptor on the file. Either way the locks exclude other processes as before.
 * There is no NFS here: what is checked is the open mode, and that the locks keep working.
 */
describe.each(LOCKERS)('tryLock with $name: how the lock file is opened', ({ env }) => {
  const tmpfs = new TmpfsMounts('cairn-volume-file-lock-');
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'cairn-lock-open-'));
    chmodSync(dir, 0o755); // another user (nobody) may reach the files
  });
  afterAll(() => {
    tmpfs.unmountAll();
    rmSync(dir, { recursive: true, force: true });
  });
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanup.splice(0)) c();
  });

  const LOCKED_RW = ['shared', 'r', 'free', 'held', 'exclusive', 'rw', 'held', 'held', 'upgrade', 'exclusive', 'rw', 'held', 'held'].join(' ');
  const LOCKED_RO = ['shared', 'r', 'free', 'held', 'exclusive', 'r', 'held', 'held', 'upgrade', 'exclusive', 'r', 'held', 'held'].join(' ');

  it('a file it may write: a shared lock read-only, an exclusive one (also an upgraded shared one) read-write (an exclusive lock on NFS needs that); both exclude other processes', async () => {
    const file = join(dir, 'writable.lock');
    writeFileSync(file, '');
    assert.equal(await lockReport(file, env), LOCKED_RW);
  });

  it('a file the process may only read (mode 0444, another owner): opened read-only; both locks still taken and still excluding', async () => {
    const file = join(dir, 'read-only.lock');
    writeFileSync(file, '', { mode: 0o444 });
    chmodSync(file, 0o444);
    assert.equal(await lockReport(file, env, NOBODY), LOCKED_RO);
  });

  it('an immutable file (chattr +i: EPERM for writing): opened read-only; both locks still taken', async (ctx) => {
    const file = join(dir, 'immutable.lock');
    writeFileSync(file, '');
    try {
      execFileSync('chattr', ['+i', file], { stdio: 'pipe' });
    } catch (err) {
      ctx.skip(`chattr +i is not possible here: ${String((err as Error).message).split('\n')[0]}`);
    }
    cleanup.push(() => execFileSync('chattr', ['-i', file]));
    assert.equal(await lockReport(file, env), LOCKED_RO);
  });

  it('a file on a read-only mount (EROFS for writing): opened read-only; both locks still taken', async (ctx) => {
    const mount = tmpfs.mount('size=64k,mode=0755');
    if (!mount) return ctx.skip(`cannot mount a tmpfs: ${tmpfs.error}`);
    const file = join(mount, 'on-read-only.lock');
    writeFileSync(file, '');
    execFileSync('mount', ['-o', 'remount,ro', mount]);
    assert.equal(await lockReport(file, env), LOCKED_RO);
  });

  it('a missing file: ENOENT for both modes, nothing created (as before)', async () => {
    const file = join(dir, 'missing.lock');
    assert.equal(await lockReport(file, env), 'ENOENT ENOENT');
    assert.equal(existsSync(file), false, 'the missing lock file was created');
  });
});
