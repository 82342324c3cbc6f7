import assert from 'node:assert/strict';
import { CairnError, isCairnError, type BackupRecord } from '@cairn/core';
import type { Group } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import type { BackupServiceContext } from './context.js';
import { fillRealistic, newRecord, readVolume, restoreBytes, takeBackup, writeVolume } from './helpers.js';

export const backupRoundTrip: Group<BackupServiceContext> = {
  name: 'backup and restore',
  cases: [
    {
      name: 'describe() names the service and lists its compression, default first',
      async run({ service }) {
        const d = service.describe();
        assert.equal(d.name, service.name);
        assert.ok(d.capabilities.compression.length > 0, 'compression lists at least "none"');
      },
    },
    {
      name: 'a full backup restores byte-exact into a new volume',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize, name: 'src', metadata: { os: 'linux' } });
        await fillRealistic(ctx, v, 1);
        const expected = await readVolume(ctx, v);
        const b = await takeBackup(ctx, v);
        assert.ok(b.stats && b.stats.bytesRead > 0, 'stats report bytes read');
        assertSameBytes(await restoreBytes(ctx, b), expected, 'restored volume');
      },
    },
    {
      name: 'restore into a used volume overwrites every byte, zeros included',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await writeVolume(ctx, v, [{ offset: 65536, data: patternBytes(65536, 3) }]);
        const expected = await readVolume(ctx, v);
        const b = await takeBackup(ctx, v);
        const target = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await writeVolume(ctx, target, [{ offset: 0, data: patternBytes(ctx.volumeSize, 4) }]);
        const a = await ctx.volumes.attach({ kind: 'volume', id: target.id }, 'rw');
        await ctx.service.restore(b, a.device, { targetIsZeroed: false });
        await ctx.volumes.detach(a.id);
        assertSameBytes(await readVolume(ctx, target), expected, 'restored over garbage');
      },
    },
    {
      name: 'restore into a larger volume writes the backup and leaves the tail alone',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 2);
        const expected = await readVolume(ctx, v);
        const b = await takeBackup(ctx, v);
        const got = await restoreBytes(ctx, b, ctx.volumeSize * 2);
        assertSameBytes(got.subarray(0, ctx.volumeSize), expected, 'restored head');
        assert.ok(got.subarray(ctx.volumeSize).every((x) => x === 0), 'tail untouched');
      },
    },
    {
      name: 'restore into a smaller volume fails with INVALID_INPUT',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        const b = await takeBackup(ctx, v);
        const small = await ctx.volumes.createVolume({ size: ctx.volumeSize / 2 });
        const a = await ctx.volumes.attach({ kind: 'volume', id: small.id }, 'rw');
        await rejectsWithCode(ctx.service.restore(b, a.device), 'INVALID_INPUT', 'restore into smaller');
        await ctx.volumes.detach(a.id);
      },
    },
    {
      name: 'a backup cancelled before it ends fails with CANCELLED and leaves nothing to restore',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 5);
        const controller = new AbortController();
        controller.abort();
        const record = newRecord(ctx, v);
        const a = await ctx.volumes.attach({ kind: 'volume', id: v.id }, 'ro');
        await rejectsWithCode(
          ctx.service.backup({ backup: record, volume: v, signal: controller.signal, progress: () => {} }, { device: a.device }),
          'CANCELLED',
          'cancelled backup',
        );
        await ctx.volumes.detach(a.id);
        const target = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        const t = await ctx.volumes.attach({ kind: 'volume', id: target.id }, 'rw');
        await rejectsWithCode(ctx.service.restore({ ...record, status: 'available' }, t.device), 'NOT_FOUND', 'restore of cancelled');
        await ctx.volumes.detach(t.id);
      },
    },
    {
      name: 'a backup cancelled while it copies either fails with CANCELLED and leaves nothing to restore, or resolves and restores byte-exact',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 10);
        const expected = await readVolume(ctx, v);
        const controller = new AbortController();
        const record = newRecord(ctx, v);
        const a = await ctx.volumes.attach({ kind: 'volume', id: v.id }, 'ro');
        // Cancelled at its first progress report, while it copies. Resolving commits the backup
        // (a cancel is then too late); rejecting must leave nothing behind, as the flow then
        // records the backup failed and never deletes its data. A service checks its signal
        // before committing: cancelled while bytes were still to copy, it cannot have resolved.
        let cancelledEarly = false;
        const cancel = (done: number, total: number) => {
          if (!controller.signal.aborted) cancelledEarly = done < total;
          controller.abort();
        };
        const outcome = await ctx.service
          .backup({ backup: record, volume: v, signal: controller.signal, progress: cancel }, { device: a.device })
          .then(
            () => 'resolved' as const,
            (err: unknown) => err,
          );
        await ctx.volumes.detach(a.id);
        if (outcome === 'resolved') {
          assert.ok(!cancelledEarly, 'a backup cancelled while bytes were still to copy resolved: its signal was not checked before it committed');
          assertSameBytes(await restoreBytes(ctx, { ...record, status: 'available' }), expected, 'a backup that resolved despite the cancel');
          return;
        }
        assert.equal((outcome as { code?: unknown }).code, 'CANCELLED', `cancelled backup: ${String(outcome)}`);
        const target = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        const t = await ctx.volumes.attach({ kind: 'volume', id: target.id }, 'rw');
        await rejectsWithCode(ctx.service.restore({ ...record, status: 'available' }, t.device), 'NOT_FOUND', 'restore of a backup cancelled while it copied');
        await ctx.volumes.detach(t.id);
      },
    },
    {
      name: 'a backup whose source fails mid-copy rejects with a CairnError and leaves nothing to restore',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 11);
        const record = newRecord(ctx, v);
        const a = await ctx.volumes.attach({ kind: 'volume', id: v.id }, 'ro');
        const read = a.device.read.bind(a.device);
        let bytes = 0;
        // The device fails once a quarter of the volume has been read (a disk or link going away).
        a.device.read = async (offset, length, into) => {
          bytes += length;
          if (bytes > ctx.volumeSize / 4) throw new CairnError('UNAVAILABLE', 'source device went away');
          return read(offset, length, into);
        };
        let failure: unknown;
        try {
          await ctx.service.backup({ backup: record, volume: v, signal: new AbortController().signal, progress: () => {} }, { device: a.device });
        } catch (err) {
          failure = err;
        } finally {
          await ctx.volumes.detach(a.id);
        }
        assert.ok(failure !== undefined, 'a backup whose every read past a quarter fails should fail');
        assert.ok(isCairnError(failure), `the failure is a CairnError with a stable code, got ${String(failure)}`);
        const target = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        const t = await ctx.volumes.attach({ kind: 'volume', id: target.id }, 'rw');
        await rejectsWithCode(ctx.service.restore({ ...record, status: 'available' }, t.device), 'NOT_FOUND', 'restore of a failed backup');
        await ctx.volumes.detach(t.id);
      },
    },
    {
      name: 'delete is idempotent and a deleted backup restores with NOT_FOUND',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 6);
        const b = await takeBackup(ctx, v);
        await ctx.service.delete(b);
        await ctx.service.delete(b);
        const target = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        const t = await ctx.volumes.attach({ kind: 'volume', id: target.id }, 'rw');
        await rejectsWithCode(ctx.service.restore(b, t.device), 'NOT_FOUND', 'restore after delete');
        await ctx.volumes.detach(t.id);
      },
    },
    {
      name: 'exportRecord then importRecord gives back a record that restores; garbage fails with INVALID_INPUT',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 7);
        const expected = await readVolume(ctx, v);
        const b = await takeBackup(ctx, v);
        const exported = await ctx.service.exportRecord(b);
        assert.equal(typeof exported, 'string');
        const imported = await ctx.service.importRecord(exported);
        assert.equal(imported.id, b.id);
        assert.equal(imported.status, 'available');
        assertSameBytes(await restoreBytes(ctx, imported), expected, 'restore of imported record');
        await rejectsWithCode(ctx.service.importRecord('not a record'), 'INVALID_INPUT', 'importRecord(garbage)');
        // The stored data is authoritative: a document of a record altered on what the data is
        // (exportRecord serializes the record it is given, or takes those fields from the data) is
        // refused with INVALID_INPUT, or imports as the stored backup, never as the document says.
        const altered = { ...b, volumeId: '00000000-0000-4000-8000-00000000beef', size: b.size * 2, createdAt: '2020-01-01T00:00:00.000Z', parentId: b.id, incremental: true };
        for (const [field, value] of Object.entries(altered)) {
          if (!['volumeId', 'size', 'createdAt', 'parentId', 'incremental'].includes(field)) continue;
          const doc = await ctx.service.exportRecord({ ...b, [field]: value });
          let back: BackupRecord;
          try {
            back = await ctx.service.importRecord(doc);
          } catch (err) {
            assert.equal((err as { code?: unknown }).code, 'INVALID_INPUT', `importRecord of a document altered on ${field}: ${String(err)}`);
            continue;
          }
          const held = { volumeId: back.volumeId, size: back.size, createdAt: back.createdAt, parentId: back.parentId ?? undefined, incremental: back.incremental };
          assert.deepEqual(held, { volumeId: b.volumeId, size: b.size, createdAt: b.createdAt, parentId: undefined, incremental: false }, `importRecord of a document altered on ${field} must give the stored backup's fields`);
        }
        await ctx.service.delete(b);
        await rejectsWithCode(ctx.service.importRecord(exported), 'NOT_FOUND', 'importRecord(deleted data)');
      },
    },
  ],
};

export const backupVerify: Group<BackupServiceContext> = {
  name: 'verify',
  cases: [
    {
      name: 'verify of intact backups reports no problems, and after corruption names the broken backup',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 8);
        const b = await takeBackup(ctx, v);
        const clean = await ctx.service.verify(b);
        assert.deepEqual(clean.problems, []);
        assert.deepEqual(clean.checked, [b.id]);
        assert.deepEqual((await ctx.service.verify()).problems, []);
        await ctx.corrupt(b);
        const report = await ctx.service.verify(b);
        assert.ok(report.problems.some((p) => p.backupId === b.id && p.code === 'CORRUPT'), `problems: ${JSON.stringify(report.problems)}`);
        const target = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        const t = await ctx.volumes.attach({ kind: 'volume', id: target.id }, 'rw');
        await rejectsWithCode(ctx.service.restore(b, t.device), 'CORRUPT', 'restore of corrupted backup');
        await ctx.volumes.detach(t.id);
      },
    },
    {
      name: 'a cancelled verify rejects with CANCELLED; one cancelled while it runs rejects so too, or resolves having checked everything',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 9);
        const b = await takeBackup(ctx, v);
        const aborted = new AbortController();
        aborted.abort();
        await rejectsWithCode(ctx.service.verify(b, { signal: aborted.signal }), 'CANCELLED', 'verify(one), cancelled before');
        await rejectsWithCode(ctx.service.verify(undefined, { signal: aborted.signal }), 'CANCELLED', 'verify(all), cancelled before');
        const whole = await ctx.service.verify(b);
        const midway = new AbortController();
        let total = 0;
        const run = ctx.service.verify(b, {
          signal: midway.signal,
          // Cancelled at its first report, before it can have read everything (a verify whose
          // reads were all under way by then may still finish: then it has checked everything).
          progress: (_done, all) => {
            total = all;
            midway.abort();
          },
        });
        const outcome = await run.then(
          (report) => ({ report }),
          (err: unknown) => ({ err }),
        );
        if ('err' in outcome) {
          assert.equal((outcome.err as { code?: string }).code, 'CANCELLED', `verify cancelled midway: ${String(outcome.err)}`);
        } else {
          assert.deepEqual(outcome.report.checked, [b.id]);
          assert.equal(outcome.report.bytesChecked, whole.bytesChecked, 'a resolved verify checked everything');
          assert.equal(outcome.report.bytesChecked, total);
        }
      },
    },
  ],
};
