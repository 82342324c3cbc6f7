import assert from 'node:assert/strict';
import type { Group } from '../harness.js';
import { rejectsWithCode } from '../harness.js';
import type { BackupServiceContext } from './context.js';
import { fillRealistic, newRecord, takeBackup } from './helpers.js';

/**
 * BackupService.assertStored, for services that have it (the method is optional: a service
 * without it passes, and the flow falls back to importRecord). The flow keeps an imported record
 * only while it resolves, and removes it when it fails `NOT_FOUND`: an answer of "stored" for
 * data that is gone leaves a record of nothing, and another code for it keeps that record too.
 */
export const backupAssertStored: Group<BackupServiceContext> = {
  name: 'assertStored',
  cases: [
    {
      name: 'assertStored resolves for a stored backup, and fails NOT_FOUND for one never stored and for one deleted',
      async run(ctx) {
        const { service } = ctx;
        if (!service.assertStored) return;
        const v = await ctx.volumes.createVolume({ size: ctx.volumeSize });
        await fillRealistic(ctx, v, 12);
        const kept = await takeBackup(ctx, v);
        const gone = await takeBackup(ctx, v);
        await service.assertStored(kept);
        await service.assertStored(gone);
        // The record the flow asks with is its catalog's: a target name and labels of its own.
        await service.assertStored({ ...kept, service: 'imported-as', name: 'relabelled', updatedAt: new Date().toISOString() });
        const never = newRecord(ctx, v);
        const err = await rejectsWithCode(service.assertStored({ ...never, status: 'available' }), 'NOT_FOUND', 'assertStored(a backup never stored)');
        assert.equal((err as { driver?: unknown }).driver, service.name, 'assertStored\'s NOT_FOUND is tagged with the service name');
        await service.delete(gone);
        await rejectsWithCode(service.assertStored(gone), 'NOT_FOUND', 'assertStored(a deleted backup)');
        await service.assertStored(kept);
      },
    },
  ],
};
