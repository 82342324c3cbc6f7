import assert from 'node:assert/strict';
import type { Group } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import type { BackupServiceContext } from './context.js';
import { fillRealistic, newRecord, readVolume, restoreBytes, takeBackup, writeVolume } from './helpers.js';

/** Scattered writes touching a few blocks, as a day of use would. */
const dayOfWrites = (size: number, seed: number) => [
  { offset: 4096, data: patternBytes(8192, seed) },
  { offset: size / 2 + 100, data: patternBytes(70_000, seed + 1) },
  { offset: size - 65536, data: null, length: 65536 },
];

export const incrementalCases: Group<BackupServiceContext> = {
  name: 'incremental backups',
  cases: [
    {
      name: 'an incremental and an incremental of it each restore byte-exact, as does the full under them',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 21);
        const v0 = await readVolume(ctx, v);
        const full = await takeBackup(ctx, v);
        await writeVolume(ctx, v, dayOfWrites(ctx.volumeSize, 30));
        const v1 = await readVolume(ctx, v);
        const inc1 = await takeBackup(ctx, v, { parent: full });
        await writeVolume(ctx, v, dayOfWrites(ctx.volumeSize, 40));
        const v2 = await readVolume(ctx, v);
        const inc2 = await takeBackup(ctx, v, { parent: inc1 });
        assertSameBytes(await restoreBytes(ctx, inc2), v2, 'incremental of incremental');
        assertSameBytes(await restoreBytes(ctx, inc1), v1, 'incremental');
        assertSameBytes(await restoreBytes(ctx, full), v0, 'full');
      },
    },
    {
      name: 'an incremental with changedSince reads only changed blocks and restores byte-exact',
      async run(ctx) {
        const cbt = ctx.volumes.changedBlockTracking;
        assert.ok(cbt, 'the suite needs a source driver with changed-block tracking');
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 22);
        const cp = await cbt.createCheckpoint(v.id);
        const full = await takeBackup(ctx, v);
        await writeVolume(ctx, v, dayOfWrites(ctx.volumeSize, 50));
        const expected = await readVolume(ctx, v);
        const inc = await takeBackup(ctx, v, { parent: full, changedSince: cp.id });
        assertSameBytes(await restoreBytes(ctx, inc), expected, 'incremental from changed blocks');
        if (ctx.service.describe().capabilities.changedBlockTracking) {
          assert.ok(inc.stats!.bytesRead < ctx.volumeSize / 2, `read ${inc.stats!.bytesRead} bytes of ${ctx.volumeSize}: changed blocks were not used`);
        }
      },
    },
    {
      name: 'an incremental with an unknown changedSince falls back to a full read and stays exact',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 23);
        const full = await takeBackup(ctx, v);
        await writeVolume(ctx, v, dayOfWrites(ctx.volumeSize, 60));
        const expected = await readVolume(ctx, v);
        const inc = await takeBackup(ctx, v, { parent: full, changedSince: 'lost-checkpoint' });
        assertSameBytes(await restoreBytes(ctx, inc), expected, 'incremental after a lost checkpoint');
      },
    },
    {
      name: 'an incremental of a grown volume restores byte-exact at the new size',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 24);
        const full = await takeBackup(ctx, v);
        const grown = await ctx.volumes.extendVolume(v.id, ctx.volumeSize * 2);
        await writeVolume(ctx, grown, [{ offset: ctx.volumeSize + 12345, data: patternBytes(100_000, 70) }]);
        const expected = await readVolume(ctx, grown);
        const inc = await takeBackup(ctx, grown, { parent: full });
        assert.equal(inc.size, ctx.volumeSize * 2);
        assertSameBytes(await restoreBytes(ctx, inc), expected, 'grown incremental');
      },
    },
    {
      name: 'an incremental whose parent belongs to another volume fails with INVALID_INPUT',
      async run(ctx) {
        const a = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        const b = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        const parent = await takeBackup(ctx, a);
        await rejectsWithCode(takeBackup(ctx, b, { parent }), 'INVALID_INPUT', 'foreign parent');
      },
    },
  ],
};

export const dependentChainCases: Group<BackupServiceContext> = {
  name: 'dependent chains',
  cases: [
    {
      name: 'delete of a backup others depend on fails with CONFLICT and keeps both restorable',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 31);
        const full = await takeBackup(ctx, v);
        await writeVolume(ctx, v, dayOfWrites(ctx.volumeSize, 80));
        const expected = await readVolume(ctx, v);
        const inc = await takeBackup(ctx, v, { parent: full });
        await rejectsWithCode(ctx.service.delete(full), 'CONFLICT', 'delete parent');
        assertSameBytes(await restoreBytes(ctx, inc), expected, 'child after refused delete');
      },
    },
    {
      name: 'delete with cascade removes the backup and its dependents (or fails with NOT_SUPPORTED)',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 32);
        const full = await takeBackup(ctx, v);
        const inc = await takeBackup(ctx, v, { parent: full });
        if (!ctx.service.describe().capabilities.cascadeDelete) {
          await rejectsWithCode(ctx.service.delete(full, { cascade: true }), 'NOT_SUPPORTED', 'cascade');
          return;
        }
        await ctx.service.delete(full, { cascade: true });
        for (const b of [full, inc]) {
          const t = await ctx.volumes.createVolume({ size: ctx.volumeSize });
          const a = await ctx.volumes.attach({ kind: 'volume', id: t.id }, 'rw');
          await rejectsWithCode(ctx.service.restore(b, a.device), 'NOT_FOUND', 'restore after cascade');
          await ctx.volumes.detach(a.id);
        }
      },
    },
  ],
};

/** Without dependent chains, every backup stands alone: deleting a parent keeps the child whole. */
export const independentBackupCases: Group<BackupServiceContext> = {
  name: 'independent backups',
  cases: [
    {
      name: 'delete of a parent succeeds and its incremental still restores byte-exact',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 33);
        const full = await takeBackup(ctx, v);
        await writeVolume(ctx, v, dayOfWrites(ctx.volumeSize, 90));
        const expected = await readVolume(ctx, v);
        const inc = await takeBackup(ctx, v, { parent: full });
        await ctx.service.delete(full);
        assertSameBytes(await restoreBytes(ctx, inc), expected, 'child after parent deleted');
      },
    },
  ],
};

/** Without incremental support, a backup with a parent is refused. */
export const incrementalRefusals: Group<BackupServiceContext> = {
  name: 'incremental backups (not supported)',
  cases: [
    {
      name: 'a backup with a parent fails with NOT_SUPPORTED',
      async run(ctx) {
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        const full = await takeBackup(ctx, v);
        const record = newRecord(ctx, v, full);
        const a = await ctx.volumes.attach({ kind: 'volume', id: v.id }, 'ro');
        await rejectsWithCode(
          ctx.service.backup({ backup: record, parent: full, volume: v, signal: new AbortController().signal, progress: () => {} }, { device: a.device }),
          'NOT_SUPPORTED',
          'incremental',
        );
        await ctx.volumes.detach(a.id);
      },
    },
  ],
};
