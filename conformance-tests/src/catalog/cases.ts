import assert from 'node:assert/strict';
import { newId, type BackupRecord, type Catalog, type VolumeFlowState } from '@cairn/core';
import type { Group } from '../harness.js';
import { rejectsWithCode } from '../harness.js';
import type { CatalogContext } from './context.js';

/** A record of `volumeId` created at `createdAt`. */
export function catalogRecord(volumeId: string, createdAt: string, id: string = newId()): BackupRecord {
  return {
    id,
    name: '',
    description: '',
    volumeId,
    volumeName: volumeId,
    size: 1024 * 1024,
    status: 'creating',
    service: 'conformance',
    incremental: false,
    volumeMetadata: {},
    serviceData: {},
    createdAt,
    updatedAt: createdAt,
  };
}

const flowState = (volumeId: string, backupId: string, status: VolumeFlowState['status'] = 'backing-up'): VolumeFlowState => ({
  volumeId,
  status,
  previousStatus: 'available',
  backupId,
  since: new Date().toISOString(),
});

const ids = (records: BackupRecord[]) => records.map((r) => r.id);

export const catalogConditionalWrites: Group<CatalogContext> = {
  name: 'only-if-absent writes (ifAbsent)',
  cases: [
    {
      name: 'putBackup(ifAbsent) stores a new record; of a known id it fails with ALREADY_EXISTS and keeps the record',
      async run({ catalog }) {
        const first = catalogRecord('vol-a', '2026-01-01T00:00:00.000Z');
        await catalog.putBackup(first, { ifAbsent: true });
        assert.deepEqual(await catalog.getBackup(first.id), first);
        await rejectsWithCode(catalog.putBackup({ ...first, name: 'intruder', status: 'available' }, { ifAbsent: true }), 'ALREADY_EXISTS', 'putBackup(ifAbsent)');
        assert.deepEqual(await catalog.getBackup(first.id), first);
      },
    },
    {
      name: 'a refused putBackup(ifAbsent) of another volume and time leaves every listing as it was',
      async run({ catalog }) {
        const first = catalogRecord('vol-a', '2026-01-01T00:00:00.000Z');
        await catalog.putBackup(first);
        const other = { ...catalogRecord('vol-b', '2026-06-01T00:00:00.000Z', first.id), name: 'intruder' };
        await rejectsWithCode(catalog.putBackup(other, { ifAbsent: true }), 'ALREADY_EXISTS', 'putBackup(ifAbsent)');
        const later = { ...catalogRecord('vol-a', '2026-06-01T00:00:00.000Z', first.id), name: 'intruder' };
        await rejectsWithCode(catalog.putBackup(later, { ifAbsent: true }), 'ALREADY_EXISTS', 'putBackup(ifAbsent)');
        assert.deepEqual(ids(await catalog.listBackups()), [first.id]);
        assert.deepEqual(ids(await catalog.listBackups({ volumeId: 'vol-a' })), [first.id]);
        assert.deepEqual(await catalog.listBackups({ volumeId: 'vol-b' }), []);
        assert.equal(await catalog.latestBackup({ volumeId: 'vol-b' }), undefined);
        assert.deepEqual(await catalog.latestBackup({ volumeId: 'vol-a' }), first);
      },
    },
    {
      name: 'only-if-absent writes see what a sibling instance wrote: its putBackup, putVolumeState and putNewVolumeIntent of a held id fail with ALREADY_EXISTS',
      async run({ catalog, sibling }) {
        // Two processes beginning a flow on one volume: exactly one may, whichever instance it uses.
        const other = sibling ?? catalog;
        const record = catalogRecord('vol-a', '2026-01-01T00:00:00.000Z');
        await catalog.putBackup(record, { ifAbsent: true });
        await rejectsWithCode(other.putBackup({ ...record, name: 'intruder' }, { ifAbsent: true }), 'ALREADY_EXISTS', 'putBackup(ifAbsent) in the other instance');
        assert.deepEqual(await catalog.getBackup(record.id), record);
        const state = flowState('vol-a', record.id);
        await other.putVolumeState(state, { ifAbsent: true });
        await rejectsWithCode(catalog.putVolumeState(flowState('vol-a', 'b2', 'restoring-backup'), { ifAbsent: true }), 'ALREADY_EXISTS', 'putVolumeState(ifAbsent) next to the other instance\'s');
        assert.deepEqual(await other.getVolumeState('vol-a'), state);
        const intent = { jobId: newId(), backupId: record.id, since: new Date().toISOString() };
        await catalog.putNewVolumeIntent(intent, { ifAbsent: true });
        await rejectsWithCode(other.putNewVolumeIntent({ ...intent, backupId: newId() }, { ifAbsent: true }), 'ALREADY_EXISTS', 'putNewVolumeIntent(ifAbsent) in the other instance');
        assert.deepEqual(await other.getNewVolumeIntent(intent.jobId), intent);
      },
    },
    {
      name: 'putBackup without ifAbsent replaces the record',
      async run({ catalog }) {
        const r = catalogRecord('vol-a', '2026-01-01T00:00:00.000Z');
        await catalog.putBackup(r);
        await catalog.putBackup({ ...r, status: 'available' });
        assert.equal((await catalog.getBackup(r.id)).status, 'available');
        assert.deepEqual(ids(await catalog.listBackups({ volumeId: 'vol-a' })), [r.id]);
      },
    },
    {
      name: 'putVolumeState(ifAbsent) takes a volume in no flow; a second fails with ALREADY_EXISTS and keeps the first; once cleared it succeeds again',
      async run({ catalog }) {
        const first = flowState('vol-a', 'b1');
        await catalog.putVolumeState(first, { ifAbsent: true });
        await rejectsWithCode(catalog.putVolumeState(flowState('vol-a', 'b2', 'restoring-backup'), { ifAbsent: true }), 'ALREADY_EXISTS', 'putVolumeState(ifAbsent)');
        assert.deepEqual(await catalog.getVolumeState('vol-a'), first);
        await catalog.putVolumeState(flowState('vol-b', 'b3'), { ifAbsent: true });
        await catalog.clearVolumeState('vol-a');
        const again = flowState('vol-a', 'b4', 'restoring-backup');
        await catalog.putVolumeState(again, { ifAbsent: true });
        assert.deepEqual(await catalog.getVolumeState('vol-a'), again);
        // Without ifAbsent a state is replaced.
        const replaced = { ...again, status: 'error_restoring' as const };
        await catalog.putVolumeState(replaced);
        assert.deepEqual(await catalog.getVolumeState('vol-a'), replaced);
      },
    },
  ],
};

/** For catalogs whose ifAbsent writes are atomic: of concurrent ones, exactly one wins. */
export const catalogConcurrency: Group<CatalogContext> = {
  name: 'concurrent only-if-absent writers',
  cases: [
    {
      name: 'of concurrent putBackup(ifAbsent) calls of one id (from a sibling too) exactly one wins, and the volume lists it once',
      async run({ catalog, sibling }) {
        const id = newId();
        const records = Array.from({ length: 8 }, (_, i) => ({ ...catalogRecord('vol-a', `2026-01-01T00:00:0${i}.000Z`, id), name: `writer ${i}` }));
        const results = await Promise.allSettled(records.map((r, i) => (i % 2 === 1 && sibling ? sibling : catalog).putBackup(r, { ifAbsent: true })));
        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        assert.equal(winners.length, 1, `winners: ${winners.join(',')}`);
        for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as { code?: string }).code, 'ALREADY_EXISTS');
        assert.deepEqual(await catalog.getBackup(id), records[winners[0]!]);
        assert.deepEqual(ids(await catalog.listBackups({ volumeId: 'vol-a' })), [id]);
      },
    },
    {
      name: 'of concurrent putVolumeState(ifAbsent) calls on one volume (from a sibling too) exactly one wins',
      async run({ catalog, sibling }) {
        const states = Array.from({ length: 8 }, (_, i) => flowState('vol-a', `b${i}`));
        const results = await Promise.allSettled(states.map((s, i) => (i % 2 === 1 && sibling ? sibling : catalog).putVolumeState(s, { ifAbsent: true })));
        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        assert.equal(winners.length, 1, `winners: ${winners.join(',')}`);
        for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as { code?: string }).code, 'ALREADY_EXISTS');
        assert.deepEqual(await catalog.getVolumeState('vol-a'), states[winners[0]!]);
      },
    },
  ],
};

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** How long a section may wait for another that has ended before the case calls it stuck. */
const STUCK_MS = 5_000;

/**
 * Read-modify-writes of one record in sections: each reads the record, waits a little (so an
 * unguarded pair would both read the same value), and writes its name one longer. Returns the
 * final name's length, which is the number of sections that ran alone.
 */
async function countInSections(catalogs: Catalog[], id: string, perCatalog: number): Promise<number> {
  await catalogs[0]!.putBackup({ ...catalogRecord('vol-a', '2026-01-01T00:00:00.000Z', id), name: '' });
  const bump = (catalog: Catalog) =>
    catalog.section(id, async () => {
      const r = await catalog.getBackup(id);
      await pause(5);
      await catalog.putBackup({ ...r, name: `${r.name}x` });
    });
  await Promise.all(catalogs.flatMap((c) => Array.from({ length: perCatalog }, () => bump(c))));
  return (await catalogs[0]!.getBackup(id)).name.length;
}

/** Sections (Catalog.section): one record's read-check-writes, one at a time in every process. */
export const catalogSections: Group<CatalogContext> = {
  name: 'record sections (section)',
  cases: [
    {
      name: 'sections of one backup never overlap: concurrent read-modify-writes of its record all land',
      async run({ catalog, sibling }) {
        const catalogs = sibling ? [catalog, sibling] : [catalog];
        const expected = 8;
        assert.equal(await countInSections(catalogs, newId(), expected / catalogs.length), expected, 'writes lost: sections overlapped');
      },
    },
    {
      name: 'sections of different backups run at once, and a section of one backup may run a section of another inside it',
      async run({ catalog, sibling }) {
        const other = sibling ?? catalog;
        let enteredB!: () => void;
        const bEntered = new Promise<void>((r) => (enteredB = r));
        // A waits inside its section until B is inside its own: they must overlap.
        const a = catalog.section('parent-a', async () => {
          await bEntered;
          return catalog.section('child-a', async () => 'nested');
        });
        const b = other.section('parent-b', async () => {
          enteredB();
          return 'b';
        });
        const result = await Promise.race([Promise.all([a, b]), pause(STUCK_MS).then(() => 'stuck')]);
        assert.deepEqual(result, ['nested', 'b'], 'sections of different backups waited for each other');
      },
    },
    {
      name: 'a section waiting for another rejects with CANCELLED when its signal aborts, and its fn never runs',
      async run({ catalog, sibling }) {
        // A restore or delete that gave up must not go on to change the record later.
        let release!: () => void;
        let entered!: () => void;
        const inside = new Promise<void>((r) => (entered = r));
        const holder = catalog.section('b1', async () => {
          entered();
          await new Promise<void>((r) => (release = r));
          return 'held';
        });
        await inside;
        for (const waiter of sibling ? [catalog, sibling] : [catalog]) {
          const controller = new AbortController();
          let ran = false;
          const waiting = waiter.section('b1', async () => void (ran = true), controller.signal);
          await pause(20);
          controller.abort();
          const outcome = await Promise.race([waiting.then(() => 'resolved', (err: unknown) => (err as { code?: unknown }).code), pause(STUCK_MS).then(() => 'stuck')]);
          assert.equal(outcome, 'CANCELLED', `a waiting section${waiter === catalog ? '' : ' (sibling)'} whose signal aborted`);
          assert.equal(ran, false, 'the cancelled section ran its fn');
        }
        release();
        assert.equal(await holder, 'held');
        assert.equal(await Promise.race([catalog.section('b1', async () => 'next'), pause(STUCK_MS).then(() => 'stuck')]), 'next', 'the backup is free once the holder ends');
      },
    },
    {
      name: "a section resolves with fn's value and rejects with fn's error, and one that failed frees the backup for the next",
      async run({ catalog, sibling }) {
        assert.equal(await catalog.section('b1', async () => 42), 42);
        const boom = new Error('boom');
        await assert.rejects(
          catalog.section('b1', async () => {
            throw boom;
          }),
          (err) => err === boom,
        );
        const next = await Promise.race([(sibling ?? catalog).section('b1', async () => 'next'), pause(STUCK_MS).then(() => 'stuck')]);
        assert.equal(next, 'next', 'the failed section kept the backup');
      },
    },
  ],
};
