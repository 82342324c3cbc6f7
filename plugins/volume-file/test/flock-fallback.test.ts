import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'vitest';
import { childrenPerTest, driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;
/** Forces the fallbacks in the processes it is given to: locks taken through flock(1) (README, fs-ext). */
const FALLBACK = { CAIRN_VOLUME_FILE_NO_FS_EXT: '1' };
const builtFileLock = fileURLToPath(new URL('../dist/file-lock.js', import.meta.url));

/** The pids of the children of process `pid` (its main thread's, which is where Node spawns them). */
async function childrenOf(pid: number): Promise<string[]> {
  return (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).split(' ').filter(Boolean);
}

/**
 * The flock(1) fallback of the file locks (file-lock.ts), in real processes forced to it: a lock
 * is on a descriptor of the process itself, like fs-ext's, so nothing is created by taking one,
 * and nothing outlives the process that held it.
 */
describe('FileVolumeDriver with the flock(1) fallback', () => {
  const t = driverPerTest();
  const children = childrenPerTest();

  it('a status probe of a volume marked by a dead writer whose writer lock file is gone (a delete meanwhile) says available and creates no file', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const holder = children.holder(t.dir, v.id, 'rw', 0, FALLBACK);
    assert.equal(await holder.ready, 'attached');
    await holder.kill(); // its writer mark stays in the sidecar
    // What a deleteVolume does between a probe's read of the sidecar and its lock; also the state
    // a writer of a driver version without writer locks leaves.
    const writerLock = join(t.dir, 'volumes', `${v.id}.writer`);
    await rm(writerLock);
    const poller = children.poller(t.dir, 3, FALLBACK);
    await poller.polling;
    const report = await poller.stop();
    assert.deepEqual(report, { polls: (report as { polls: number }).polls, inUse: 0 }, 'the poller saw the dead writer as alive, or failed');
    assert.equal(existsSync(writerLock), false, 'a writer lock file was created by the probe');
  });

  it('a lock tried on a missing file fails with ENOENT and creates nothing', async () => {
    const missing = join(t.dir, 'volumes', 'gone.img');
    const script = `import { tryLock } from ${JSON.stringify(builtFileLock)};
      for (const mode of ['shared', 'exclusive']) await tryLock(process.argv[1], mode, 'file').then(() => console.log('locked'), (e) => console.log(e.code));`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script, missing], { env: { ...process.env, ...FALLBACK } });
    assert.deepEqual(stdout.trim().split('\n'), ['ENOENT', 'ENOENT']);
    assert.equal(existsSync(missing), false, 'the missing file was created');
  });

  it('a shared lock converts in place as flock(2) does: exclusive when alone; else the shared lock still held; no descriptor left by a conflict', async () => {
    const file = join(t.dir, 'lock-me');
    await writeFile(file, '');
    // Another open file's lock, tried without waiting by flock(1) itself: 'free' or 'held'.
    const script = `import { tryLock } from ${JSON.stringify(builtFileLock)};
      import { spawnSync, spawn } from 'node:child_process';
      import { readdirSync, readlinkSync } from 'node:fs';
      const path = process.argv[1];
      const other = (m) => (spawnSync('flock', ['--nonblock', m, path, 'true']).status === 0 ? 'free' : 'held');
      const open = () => readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync('/proc/self/fd/' + fd) === path; } catch { return false; } }).length;
      const out = [];
      const a = await tryLock(path, 'shared', 'file');
      out.push(a.mode, other('-s'), other('-x'));
      out.push(await a.upgrade(), a.mode, other('-s'));
      await a.release();
      out.push(other('-x'));
      const holder = spawn('flock', ['-s', path, '-c', 'echo ok; exec cat'], { stdio: ['pipe', 'pipe', 'inherit'] });
      await new Promise((r) => holder.stdout.once('data', r));
      const b = await tryLock(path, 'shared', 'file');
      out.push(await b.upgrade(), b.mode, other('-s'), other('-x'));
      out.push(String(await tryLock(path, 'exclusive', 'file')), open());
      await b.release();
      out.push(open());
      holder.stdin.end();
      await new Promise((r) => holder.once('close', r));
      console.log(out.join(' '));`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script, file], { env: { ...process.env, ...FALLBACK } });
    assert.deepEqual(stdout.trim().split(' '), [
      ...['shared', 'free', 'held'], // a shared lock: other readers in, writers out
      ...['exclusive', 'exclusive', 'held'], // converted alone: readers out too
      'free', // released
      ...['shared', 'shared', 'free', 'held'], // another reader holds it: the conversion fails, the shared lock is kept
      ...['null', '1'], // a conflicting try keeps no descriptor open: only b's
      '0',
    ]);
  });

  it('a writer SIGKILLed while attached read-write holds its locks in no other process: the volume is available and attaches read-write here at once', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const holder = children.holder(t.dir, v.id, 'rw', MiB, FALLBACK);
    assert.equal(await holder.ready, 'attached');
    assert.deepEqual(await childrenOf(holder.child.pid!), [], 'processes the writer keeps running while attached');
    assert.equal((await t.driver.getVolume(v.id)).status, 'in-use', 'status while the other process writes');
    await holder.kill();
    // Its descriptors, and so its flocks, are gone by the time its exit is reported: no retry.
    assert.equal((await t.driver.getVolume(v.id)).status, 'available', 'status once the marked writer is dead');
    const rw = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    assert.ok((await rw.device.read(MiB, 4096)).equals(Buffer.alloc(4096, 0x77)), 'the dead writer\'s write reached the image');
    await assert.rejects(rw.device.extents({ kind: 'changed', since: cp.id }), { code: 'NOT_FOUND' }, 'extents(changed) after a crash');
    await t.driver.detach(rw.id);
  });
});
