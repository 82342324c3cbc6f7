/**
 * A caller's signal (a server's, living as long as the process) is linked to each job only while
 * the job runs: once it has ended, the signal holds no listener of it.
 */
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { linkedController } from '../src/flow/jobs.js';
import { expectCode, filledVolume, MiB, rig } from './helpers.js';

describe('a long-lived signal given to many jobs', () => {
  it('keeps no listener of backups and restores that have ended, succeeded or failed', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, 2 * MiB);
    const server = new AbortController();
    const listeners = () => getEventListeners(server.signal, 'abort').length;
    const backups = [];
    for (let i = 0; i < 3; i++) backups.push(await manager.backup({ volumeId: v.id, signal: server.signal }));
    await manager.restore({ backupId: backups[0]!.id, newVolume: {}, signal: server.signal });
    await manager.restore({ backupId: backups[1]!.id, volumeId: v.id, signal: server.signal });
    // A job that fails: its service fails mid-copy.
    service.failAfterBytes = 0;
    await expectCode(manager.backup({ volumeId: v.id, signal: server.signal }), 'INTERNAL');
    service.failAfterBytes = undefined;
    expect(listeners()).toBe(0);
    // While a job runs (here stalled in its copy), its listener is there: the signal still cancels it.
    service.stallAfterBytes = 0;
    const job = await manager.startBackup({ volumeId: v.id, signal: server.signal });
    await service.reachedStall;
    expect(listeners()).toBe(1);
    server.abort();
    await expectCode(job.done, 'CANCELLED');
    expect(listeners()).toBe(0);
  });
});

describe('linkedController', () => {
  it("aborts with the caller's reason until unlinked; after unlink the caller's abort reaches it no more", () => {
    const caller = new AbortController();
    const first = linkedController(caller.signal);
    const second = linkedController(caller.signal);
    expect(getEventListeners(caller.signal, 'abort')).toHaveLength(2);
    second.unlink();
    second.unlink();
    expect(getEventListeners(caller.signal, 'abort')).toHaveLength(1);
    caller.abort('stop');
    expect(first.signal.aborted && first.signal.reason).toBe('stop');
    expect(second.signal.aborted).toBe(false);
    second.abort('own');
    expect(second.signal.reason).toBe('own');
  });

  it('is aborted at once by a caller signal already aborted', () => {
    const linked = linkedController(AbortSignal.abort('gone'));
    expect(linked.signal.reason).toBe('gone');
    linked.unlink();
  });
});
