import assert from 'node:assert/strict';
import { afterEach, describe, it, vi } from 'vitest';
import { rejectsWithCode } from '@cairn/conformance';
import type { DriverContext } from '../src/driver-context.js';
import { FileVolumeDriver } from '../src/index.js';
import { driverPerTest, type Holder, spawnHolder } from './helpers.js';

const MiB = 1024 * 1024;

// Wraps every lock so the test can act in the instant one is released: that is where a
// non-atomic shared → exclusive upgrade lets another process in. A wrapped lock upgrades as
// flock(2) converts a lock: the shared lock is dropped first (the test acts then), then the
// exclusive one is tried; should that fail, no lock is held any more.
const hooks = vi.hoisted(() => ({ onRelease: undefined as (() => Promise<void>) | undefined }));
vi.mock('../src/file-lock.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../src/file-lock.js')>();
  type Lock = NonNullable<Awaited<ReturnType<typeof real.tryLock>>>;
  return {
    ...real,
    tryLock: async (...args: Parameters<typeof real.tryLock>) => {
      const [path, , driver] = args;
      let lock: Lock | null = await real.tryLock(...args);
      if (!lock) return null;
      const release = async () => {
        const held = lock;
        lock = null;
        if (!held) return;
        await held.release();
        const hook = hooks.onRelease;
        hooks.onRelease = undefined;
        await hook?.();
      };
      return {
        get mode() {
          return lock?.mode ?? 'shared';
        },
        upgrade: async () => {
          if (lock?.mode === 'exclusive') return 'exclusive';
          await release();
          lock = await real.tryLock(path, 'exclusive', driver);
          return lock ? 'exclusive' : null;
        },
        release,
      };
    },
  };
});

/**
 * Contract: when upgrading a shared image lock to exclusive loses the lock altogether (another
 * process took the image in between), the upgrade fails with BUSY and the image counts as
 * unlocked: later users re-acquire a real lock or fail with BUSY. Nothing — status, checkpoint,
 * snapshot — proceeds on the strength of a lock that is not held.
 *
 * An attach(rw) never meets a read-only attachment of its own instance (that is BUSY before any
 * lock is taken), but it can meet a short shared hold of the instance — the status probe of a
 * concurrent getVolume — and then upgrades it. The tests take that shared hold directly.
 */
describe('FileVolumeDriver after losing an image lock in an upgrade race', () => {
  const t = driverPerTest();
  let holder: Holder | undefined;

  afterEach(async () => {
    hooks.onRelease = undefined;
    if (holder && holder.child.exitCode === null && holder.child.signalCode === null) await holder.kill();
    holder = undefined;
  });

  /** A shared hold of this instance on the volume's image, as getVolume's status probe takes. */
  const holdShared = (volumeId: string): Promise<() => Promise<void>> => {
    const { ctx } = t.driver as unknown as { ctx: DriverContext };
    return ctx.locks.hold(ctx.store.layout.image('volume', volumeId), 'shared');
  };

  it('fails the upgrade with BUSY, then re-acquires for real: BUSY while the other process writes, working after', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const release = await holdShared(v.id);
    // Another process attaches read-write exactly when this one's shared lock is dropped.
    hooks.onRelease = async () => {
      holder = spawnHolder(t.dir, v.id, 'rw');
      assert.equal(await holder.ready, 'attached');
    };
    await rejectsWithCode(t.driver.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY', 'attach(rw) losing the race');
    assert.ok(holder, 'the race was injected');

    assert.equal((await t.driver.getVolume(v.id)).status, 'in-use', 'status while the other process writes');
    await rejectsWithCode(t.driver.changedBlockTracking.createCheckpoint(v.id), 'BUSY', 'createCheckpoint while the other process writes');
    await rejectsWithCode(t.driver.createSnapshot(v.id), 'BUSY', 'createSnapshot while the other process writes');
    await rejectsWithCode(t.driver.attach({ kind: 'volume', id: v.id }, 'ro'), 'BUSY', 'a second attach(ro) while the other process writes');
    assert.deepEqual(await t.driver.changedBlockTracking.listCheckpoints(v.id), [], 'no checkpoint was recorded');

    assert.equal(await holder.stop(), 0);
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    assert.equal((await t.driver.getVolume(v.id)).status, 'available');
    await release();
    // Every lock was released: the volume can be written, and tracks from the checkpoint.
    const rw = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await rw.device.write(0, Buffer.alloc(512, 1));
    assert.deepEqual(await rw.device.extents({ kind: 'changed', since: cp.id }), [{ offset: 0, length: 65536 }]);
    await t.driver.detach(rw.id);
  });

  it('after a lost upgrade, a new attach(ro) takes a real shared lock that keeps other writers out', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const release = await holdShared(v.id);
    hooks.onRelease = async () => {
      holder = spawnHolder(t.dir, v.id, 'rw');
      assert.equal(await holder.ready, 'attached');
    };
    await rejectsWithCode(t.driver.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY', 'attach(rw) losing the race');
    assert.equal(await holder!.stop(), 0);
    const ro2 = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    holder = spawnHolder(t.dir, v.id, 'rw');
    assert.equal(await holder.ready.catch((e: Error) => e.message.split('\n')[0]), 'error BUSY', 'another process cannot write while this one reads');
    await t.driver.detach(ro2.id);
    await release();
  });
});
