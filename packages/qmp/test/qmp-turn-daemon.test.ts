import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { QemuStorageDaemon } from '../src/index.js';
import { fuseUsable, hangingFuseEachTest } from './fixtures/hanging-fuse-server.js';
import { expectCode, tempDir } from './helpers.js';

// A real qemu-storage-daemon runs one QMP command at a time. A `blockdev-add` of a file on a FUSE
// file system that does not answer (fixtures/hanging-fuse.mjs) holds the daemon until the file
// system's server goes (the lookup then fails). A command sent behind it used to time out
// counting from its sending, though the daemon answered it as soon as the slow one was done: in
// the qcow2 driver a detach then took the daemon for stalled and stopped it. Needs root and /dev/fuse.
const fuse = hangingFuseEachTest(fuseUsable, tempDir);

const TIMEOUT_MS = 300;

describe.skipIf(!fuseUsable)('QMP command deadlines on a real daemon held by a slow command', () => {
  it('a command queued behind a slow one held past its timeout succeeds once the slow one is answered', async () => {
    const daemon = await QemuStorageDaemon.start({ tmpParent: fuse.dir });
    try {
      const opening = daemon.qmp.execute('blockdev-add', { driver: 'file', 'node-name': 'f0', filename: join(fuse.mountPoint, 'img') }, { timeoutMs: 60_000 });
      opening.catch(() => undefined); // awaited below; handled should the test fail first
      await fuse.printed('hung img');
      const version = daemon.qmp.execute('query-version', undefined, { timeoutMs: TIMEOUT_MS });
      version.catch(() => undefined);
      await sleep(TIMEOUT_MS * 3); // the daemon is held well past query-version's timeout from its sending
      fuse.kill(); // the lookup fails: blockdev-add is answered (an error), then query-version in its turn
      await expect(opening).rejects.toMatchObject({ message: expect.stringMatching(/blockdev-add: Could not open .*connection abort/) });
      expect((await version).qemu).toEqual(daemon.qmp.greeting.version.qemu);
      expect(daemon.qmp.droppedReplies).toBe(0);
    } finally {
      await daemon.stop();
    }
  }, 30_000);

  it('a command qemu is stuck on still times out, and the one behind it one timeout later; both late replies are dropped', async () => {
    const daemon = await QemuStorageDaemon.start({ tmpParent: fuse.dir });
    try {
      const opening = daemon.qmp.execute('blockdev-add', { driver: 'file', 'node-name': 'f0', filename: join(fuse.mountPoint, 'img') }, { timeoutMs: TIMEOUT_MS });
      const version = daemon.qmp.execute('query-version', undefined, { timeoutMs: TIMEOUT_MS });
      const order: string[] = [];
      opening.catch(() => order.push('blockdev-add'));
      version.catch(() => order.push('query-version'));
      const err = await expectCode(opening, 'UNAVAILABLE');
      expect(err.details).toMatchObject({ command: 'blockdev-add', timeoutMs: TIMEOUT_MS });
      expect(fuse.lines).toContain('hung img'); // it timed out because the daemon is stuck on the lookup
      await expectCode(version, 'UNAVAILABLE');
      expect(order).toEqual(['blockdev-add', 'query-version']);
      fuse.kill();
      // The daemon goes on: a new command is answered, after the two late replies (dropped).
      expect((await daemon.qmp.execute('query-version', undefined, { timeoutMs: 10_000 })).qemu).toEqual(daemon.qmp.greeting.version.qemu);
      expect(daemon.qmp.droppedReplies).toBe(2);
    } finally {
      await daemon.stop();
    }
  }, 30_000);

  it('an event wait with `after` counts from that command\'s reply, not from its creation; a failing trigger ends it with its error', async () => {
    const daemon = await QemuStorageDaemon.start({ tmpParent: fuse.dir });
    const { qmp } = daemon;
    try {
      await qmp.execute('blockdev-add', { driver: 'null-co', 'node-name': 'n0', size: 1024 * 1024 });
      await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: join(daemon.dir, 'nbd.sock') } } });
      await qmp.execute('block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'n0', writable: false });
      const opening = qmp.execute('blockdev-add', { driver: 'file', 'node-name': 'f0', filename: join(fuse.mountPoint, 'img') }, { timeoutMs: 60_000 });
      opening.catch(() => undefined); // awaited below; handled should the test fail first
      await fuse.printed('hung img');
      // Created when block-export-del is sent: it waits behind blockdev-add, then the event comes.
      const deleting = qmp.execute('block-export-del', { id: 'e0' }, { timeoutMs: TIMEOUT_MS });
      const gone = qmp.waitForEvent('BLOCK_EXPORT_DELETED', (e) => e.data.id === 'e0', { timeoutMs: TIMEOUT_MS, after: deleting });
      await sleep(TIMEOUT_MS * 3); // well past the wait's timeout from its creation
      fuse.kill();
      await expect(opening).rejects.toMatchObject({ message: expect.stringMatching(/blockdev-add: Could not open/) });
      await deleting;
      expect((await gone).data.id).toBe('e0');

      // The trigger fails (the export is gone): the wait rejects with that error, not at a timeout.
      const again = qmp.execute('block-export-del', { id: 'e0' });
      const never = qmp.waitForEvent('BLOCK_EXPORT_DELETED', undefined, { timeoutMs: Infinity, after: again });
      const err = await expectCode(again, 'NOT_FOUND');
      await expect(never).rejects.toBe(err);
    } finally {
      await daemon.stop();
    }
  }, 30_000);
});
