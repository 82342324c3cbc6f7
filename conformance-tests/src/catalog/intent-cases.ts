import assert from 'node:assert/strict';
import { newId, type NewVolumeIntent } from '@cairn/core';
import type { Group } from '../harness.js';
import { rejectsWithCode } from '../harness.js';
import type { CatalogContext } from './context.js';

/** An intent of restore job `jobId` reading `backupId`. */
const intent = (jobId: string, backupId: string = newId()): NewVolumeIntent => ({ jobId, backupId, since: new Date().toISOString() });

const byJob = (intents: NewVolumeIntent[]) => [...intents].sort((a, b) => (a.jobId < b.jobId ? -1 : a.jobId > b.jobId ? 1 : 0));

/** New-volume intents (putNewVolumeIntent, getNewVolumeIntent, listNewVolumeIntents, deleteNewVolumeIntent). */
export const catalogIntents: Group<CatalogContext> = {
  name: 'new-volume intents',
  cases: [
    {
      name: 'putNewVolumeIntent stores an intent that get and list return (in a sibling too); deleteNewVolumeIntent removes it, and is idempotent',
      async run({ catalog, sibling }) {
        const other = sibling ?? catalog;
        const a = intent(newId());
        const b = intent(newId());
        assert.equal(await catalog.getNewVolumeIntent(a.jobId), undefined);
        assert.deepEqual(await catalog.listNewVolumeIntents(), []);
        await catalog.putNewVolumeIntent(a);
        await catalog.putNewVolumeIntent(b, { ifAbsent: true });
        assert.deepEqual(await other.getNewVolumeIntent(a.jobId), a);
        assert.deepEqual(byJob(await other.listNewVolumeIntents()), byJob([a, b]));
        await other.deleteNewVolumeIntent(a.jobId);
        await other.deleteNewVolumeIntent(a.jobId);
        await catalog.deleteNewVolumeIntent(newId());
        assert.equal(await catalog.getNewVolumeIntent(a.jobId), undefined);
        assert.deepEqual(await catalog.listNewVolumeIntents(), [b]);
      },
    },
    {
      name: 'putNewVolumeIntent(ifAbsent) of a known job fails with ALREADY_EXISTS and keeps the intent; once deleted it succeeds again; without ifAbsent it replaces',
      async run({ catalog }) {
        const jobId = newId();
        const first = intent(jobId);
        await catalog.putNewVolumeIntent(first, { ifAbsent: true });
        await rejectsWithCode(catalog.putNewVolumeIntent(intent(jobId), { ifAbsent: true }), 'ALREADY_EXISTS', 'putNewVolumeIntent(ifAbsent)');
        assert.deepEqual(await catalog.getNewVolumeIntent(jobId), first);
        const replaced = intent(jobId);
        await catalog.putNewVolumeIntent(replaced);
        assert.deepEqual(await catalog.getNewVolumeIntent(jobId), replaced);
        await catalog.deleteNewVolumeIntent(jobId);
        const again = intent(jobId);
        await catalog.putNewVolumeIntent(again, { ifAbsent: true });
        assert.deepEqual(await catalog.listNewVolumeIntents(), [again]);
      },
    },
    {
      name: 'intents are kept apart from volume states and backups: one id may be both, no listing of the others holds an intent, and deleting one leaves the other',
      async run({ catalog }) {
        const id = newId();
        const i = intent(id);
        const state = { volumeId: id, status: 'restoring-backup' as const, previousStatus: 'available', backupId: i.backupId, since: i.since };
        await catalog.putNewVolumeIntent(i, { ifAbsent: true });
        assert.equal(await catalog.getVolumeState(id), undefined);
        assert.deepEqual(await catalog.listVolumeStates(), []);
        assert.deepEqual(await catalog.listBackups(), []);
        await catalog.putVolumeState(state, { ifAbsent: true });
        await catalog.clearVolumeState(id);
        assert.deepEqual(await catalog.getNewVolumeIntent(id), i);
        await catalog.putVolumeState(state);
        await catalog.deleteNewVolumeIntent(id);
        assert.deepEqual(await catalog.getVolumeState(id), state);
        assert.deepEqual(await catalog.listNewVolumeIntents(), []);
      },
    },
  ],
};

/** For catalogs whose ifAbsent writes are atomic: of concurrent intents of one job, exactly one is recorded. */
export const catalogIntentConcurrency: Group<CatalogContext> = {
  name: 'concurrent new-volume intents',
  cases: [
    {
      name: 'of concurrent putNewVolumeIntent(ifAbsent) calls of one job exactly one wins',
      async run({ catalog, sibling }) {
        const jobId = newId();
        const intents = Array.from({ length: 8 }, () => intent(jobId));
        const results = await Promise.allSettled(intents.map((i, k) => (k % 2 === 1 && sibling ? sibling : catalog).putNewVolumeIntent(i, { ifAbsent: true })));
        const winners = results.flatMap((r, k) => (r.status === 'fulfilled' ? [k] : []));
        assert.equal(winners.length, 1, `winners: ${winners.join(',')}`);
        for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as { code?: string }).code, 'ALREADY_EXISTS');
        assert.deepEqual(await catalog.listNewVolumeIntents(), [intents[winners[0]!]]);
      },
    },
  ],
};
