import assert from 'node:assert/strict';
import type { ProgressSink } from '@cairn/core';
import type { Group } from '../harness.js';
import type { BackupServiceContext } from './context.js';
import { fillRealistic, newRecord, writeVolume } from './helpers.js';

/** A sink that records every report. */
function recorder(): { sink: ProgressSink; calls: [number, number][] } {
  const calls: [number, number][] = [];
  return { sink: (done, total) => void calls.push([done, total]), calls };
}

/**
 * Asserts reports are what a progress bar needs (ProgressEvent): at least one, integer bytes, one
 * total, `done` never going back and never past the total, and the last one at the total.
 */
function assertProgress(calls: [number, number][], what: string): void {
  assert.ok(calls.length > 0, `${what}: no progress reported`);
  const total = calls[0]![1];
  let last = 0;
  for (const [done, t] of calls) {
    assert.ok(Number.isSafeInteger(done) && Number.isSafeInteger(t) && done >= 0, `${what}: report (${done}, ${t}) is not in bytes`);
    assert.equal(t, total, `${what}: the total changed from ${total} to ${t}`);
    assert.ok(done >= last, `${what}: done went back from ${last} to ${done}`);
    assert.ok(done <= t, `${what}: done ${done} passed the total ${t}`);
    last = done;
  }
  assert.equal(last, total, `${what}: the last report ${last} is not the total ${total}`);
}

/** Progress of backup, restore and verify: monotonic, bounded by its total, ending at it. */
export const backupProgress: Group<BackupServiceContext> = {
  name: 'progress',
  cases: [
    {
      name: 'backup, restore and verify report progress that never goes back nor past its total, and ends at it',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 12);
        const record = newRecord(ctx, v);
        const backup = recorder();
        const a = await ctx.volumes.attach({ kind: 'volume', id: v.id }, 'ro');
        let result;
        try {
          result = await ctx.service.backup({ backup: record, volume: v, signal: new AbortController().signal, progress: backup.sink }, { device: a.device });
        } finally {
          await ctx.volumes.detach(a.id);
        }
        assertProgress(backup.calls, 'backup');
        const b = { ...record, status: 'available' as const, serviceData: result.serviceData, stats: result.stats };

        const restore = recorder();
        const t = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        const ta = await ctx.volumes.attach({ kind: 'volume', id: t.id }, 'rw');
        try {
          await ctx.service.restore(b, ta.device, { targetIsZeroed: true, progress: restore.sink });
        } finally {
          await ctx.volumes.detach(ta.id);
        }
        assertProgress(restore.calls, 'restore');

        const verify = recorder();
        await ctx.service.verify(b, { progress: verify.sink });
        assertProgress(verify.calls, 'verify');
        // An incremental too: its total may be what it reads, not the volume's size.
        if (ctx.service.describe().capabilities.incremental) {
          await writeVolume(ctx, v, [{ offset: 4096, data: Buffer.alloc(100_000, 0x42) }]);
          const incremental = recorder();
          const inc = newRecord(ctx, v, b);
          const ia = await ctx.volumes.attach({ kind: 'volume', id: v.id }, 'ro');
          try {
            await ctx.service.backup({ backup: inc, parent: b, volume: v, signal: new AbortController().signal, progress: incremental.sink }, { device: ia.device });
          } finally {
            await ctx.volumes.detach(ia.id);
          }
          assertProgress(incremental.calls, 'incremental backup');
        }
      },
    },
    {
      name: 'a backup of a volume whose size is no multiple of a chunk, and an incremental with nothing changed, end their progress at its total',
      async run(ctx) {
        // 4 KiB past the suite's size: no chunk size of 8 KiB or more divides it.
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize + 4096 });
        await fillRealistic(ctx, v, 31);
        await writeVolume(ctx, v, [{ offset: ctx.volumeSize, data: Buffer.alloc(4096, 0x5a) }]);
        const cbt = ctx.volumes.changedBlockTracking;
        const checkpoint = cbt ? await cbt.createCheckpoint(v.id) : undefined;
        const take = async (parent?: Parameters<typeof newRecord>[2], changedSince?: string) => {
          const calls = recorder();
          const record = newRecord(ctx, v, parent);
          const a = await ctx.volumes.attach({ kind: 'volume', id: v.id }, 'ro');
          try {
            const r = await ctx.service.backup({ backup: record, parent, volume: v, signal: new AbortController().signal, progress: calls.sink }, { device: a.device, changedSince });
            return { calls: calls.calls, backup: { ...record, status: 'available' as const, serviceData: r.serviceData, stats: r.stats } };
          } finally {
            await ctx.volumes.detach(a.id);
          }
        };
        const full = await take();
        assertProgress(full.calls, 'backup of an odd-sized volume');
        const restore = recorder();
        const t = await ctx.volumes.createVolume({ size: v.size });
        const ta = await ctx.volumes.attach({ kind: 'volume', id: t.id }, 'rw');
        try {
          await ctx.service.restore(full.backup, ta.device, { targetIsZeroed: true, progress: restore.sink });
        } finally {
          await ctx.volumes.detach(ta.id);
        }
        assertProgress(restore.calls, 'restore of an odd-sized volume');
        const verify = recorder();
        await ctx.service.verify(full.backup, { progress: verify.sink });
        assertProgress(verify.calls, 'verify of an odd-sized volume');
        if (ctx.service.describe().capabilities.incremental) {
          // Nothing written since the checkpoint: a service using it may have nothing to read.
          const inc = await take(full.backup, checkpoint?.id);
          assertProgress(inc.calls, 'incremental of an unchanged volume');
        }
      },
    },
  ],
};
