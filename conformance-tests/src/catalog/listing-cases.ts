import assert from 'node:assert/strict';
import { newId, type BackupRecord, type VolumeFlowState } from '@cairn/core';
import type { Group } from '../harness.js';
import { rejectsWithCode } from '../harness.js';
import { catalogRecord } from './cases.js';
import type { CatalogContext } from './context.js';

const ids = (records: BackupRecord[] | (BackupRecord | undefined)[]) => records.map((r) => r?.id);

/**
 * Records of three volumes whose ids are prefixes of each other (`vol`, `vol-a`, `vol-a2`), so a
 * catalog that lists a volume by key prefix shows its bug; created out of order, two at one
 * instant (ordered by id then), with several statuses, services and parents.
 */
function population(): { all: BackupRecord[]; byVolume: Record<string, BackupRecord[]> } {
  const at = (minute: number) => `2026-03-01T10:${String(minute).padStart(2, '0')}:00.000Z`;
  const [low, high] = [newId(), newId()].sort();
  const a1 = { ...catalogRecord('vol-a', at(1)), status: 'available' as const };
  const a2 = { ...catalogRecord('vol-a', at(5), high), status: 'available' as const, parentId: a1.id, incremental: true };
  const a3 = { ...catalogRecord('vol-a', at(5), low), status: 'error' as const, service: 'other-target' };
  const a4 = { ...catalogRecord('vol-a', at(9)), status: 'creating' as const, parentId: a1.id, incremental: true };
  const b1 = { ...catalogRecord('vol-a2', at(3)), status: 'available' as const };
  const b2 = { ...catalogRecord('vol-a2', at(12)), status: 'available' as const };
  const c1 = { ...catalogRecord('vol', at(7)), status: 'available' as const };
  // Oldest first by creation time, then id.
  const byVolume = { 'vol-a': [a1, a3, a2, a4], 'vol-a2': [b1, b2], vol: [c1] };
  return { all: [a4, b2, a2, c1, a1, b1, a3], byVolume };
}

/** Listings (listBackups, latestBackup, listVolumeStates): every matching record, no other, in order. */
export const catalogListings: Group<CatalogContext> = {
  name: 'listings',
  cases: [
    {
      name: 'listBackups lists exactly the records matching each filter, oldest first (by creation time, then id), in a sibling too',
      async run({ catalog, sibling }) {
        const { all, byVolume } = population();
        for (const r of all) await catalog.putBackup(r);
        const sorted = Object.values(byVolume).flat().sort((x, y) => (x.createdAt < y.createdAt ? -1 : x.createdAt > y.createdAt ? 1 : x.id < y.id ? -1 : 1));
        const [a1, a3, a2, a4] = byVolume['vol-a'];
        for (const reader of sibling ? [catalog, sibling] : [catalog]) {
          const who = reader === catalog ? '' : ' (sibling)';
          assert.deepEqual(await reader.listBackups(), sorted, `listBackups()${who}`);
          for (const [volumeId, records] of Object.entries(byVolume)) {
            assert.deepEqual(ids(await reader.listBackups({ volumeId })), ids(records), `listBackups({volumeId: ${volumeId}})${who}`);
          }
          assert.deepEqual(await reader.listBackups({ volumeId: 'vo' }), [], `listBackups({volumeId: 'vo'}) (a prefix of volume ids)${who}`);
          assert.deepEqual(ids(await reader.listBackups({ status: 'available' })), ids(sorted.filter((r) => r.status === 'available')), `listBackups({status: available})${who}`);
          assert.deepEqual(ids(await reader.listBackups({ volumeId: 'vol-a', status: 'available' })), ids([a1, a2]), `listBackups({volumeId, status})${who}`);
          assert.deepEqual(ids(await reader.listBackups({ parentId: a1!.id })), ids([a2, a4]), `listBackups({parentId})${who}`);
          assert.deepEqual(ids(await reader.listBackups({ service: 'other-target' })), ids([a3]), `listBackups({service})${who}`);
          assert.deepEqual(ids(await reader.listBackups({ volumeId: 'vol-a2', service: 'other-target' })), [], `listBackups({volumeId, service})${who}`);
        }
      },
    },
    {
      name: 'latestBackup is what listBackups with the same filter lists last, or undefined',
      async run({ catalog, sibling }) {
        const { all, byVolume } = population();
        for (const r of all) await catalog.putBackup(r);
        const [a1, , a2, a4] = byVolume['vol-a'];
        for (const reader of sibling ? [catalog, sibling] : [catalog]) {
          const who = reader === catalog ? '' : ' (sibling)';
          assert.deepEqual(await reader.latestBackup({ volumeId: 'vol-a' }), a4, `latestBackup(vol-a)${who}`);
          assert.deepEqual(await reader.latestBackup({ volumeId: 'vol-a', status: 'available' }), a2, `latestBackup(vol-a, available)${who}`);
          assert.deepEqual(await reader.latestBackup({ volumeId: 'vol-a', parentId: a1!.id, status: 'available' }), a2, `latestBackup(vol-a, parent, available)${who}`);
          assert.deepEqual(await reader.latestBackup({ volumeId: 'vol-a2' }), byVolume['vol-a2']!.at(-1), `latestBackup(vol-a2)${who}`);
          assert.deepEqual(await reader.latestBackup({ volumeId: 'vol' }), byVolume.vol![0], `latestBackup(vol)${who}`);
          assert.equal(await reader.latestBackup({ volumeId: 'vo' }), undefined, `latestBackup(vo)${who}`);
          assert.equal(await reader.latestBackup({ volumeId: 'vol-a2', status: 'error' }), undefined, `latestBackup(vol-a2, error)${who}`);
        }
        // A replaced record moves with its new status.
        await catalog.putBackup({ ...a4!, status: 'available' });
        assert.deepEqual(await catalog.latestBackup({ volumeId: 'vol-a', status: 'available' }), { ...a4!, status: 'available' }, 'latestBackup after a record became available');
      },
    },
    {
      name: 'a deleted backup is gone from get, every listing and latestBackup; the others stay',
      async run({ catalog, sibling }) {
        const { all, byVolume } = population();
        for (const r of all) await catalog.putBackup(r);
        const [a1, a3, a2, a4] = byVolume['vol-a'];
        await catalog.deleteBackup(a4!.id);
        await catalog.deleteBackup(a4!.id); // idempotent
        for (const reader of sibling ? [catalog, sibling] : [catalog]) {
          const who = reader === catalog ? '' : ' (sibling)';
          await rejectsWithCode(reader.getBackup(a4!.id), 'NOT_FOUND', `getBackup(deleted)${who}`);
          assert.deepEqual(ids(await reader.listBackups({ volumeId: 'vol-a' })), ids([a1, a3, a2]), `listBackups(vol-a) after delete${who}`);
          assert.deepEqual(ids(await reader.listBackups({ parentId: a1!.id })), ids([a2]), `listBackups({parentId}) after delete${who}`);
          assert.equal((await reader.listBackups()).length, all.length - 1, `listBackups() after delete${who}`);
          assert.deepEqual(await reader.latestBackup({ volumeId: 'vol-a' }), a2, `latestBackup(vol-a) after delete${who}`);
        }
      },
    },
    {
      name: 'listVolumeStates lists every state put and none cleared, in a sibling too',
      async run({ catalog, sibling }) {
        const state = (volumeId: string): VolumeFlowState => ({ volumeId, status: 'backing-up', previousStatus: 'available', backupId: newId(), since: new Date().toISOString() });
        const states = ['vol', 'vol-a', 'vol-a2'].map(state);
        for (const s of states) await catalog.putVolumeState(s);
        const byVolume = (list: VolumeFlowState[]) => [...list].sort((x, y) => (x.volumeId < y.volumeId ? -1 : 1));
        await catalog.clearVolumeState('vol-a');
        await catalog.clearVolumeState('vol-a'); // idempotent
        for (const reader of sibling ? [catalog, sibling] : [catalog]) {
          const who = reader === catalog ? '' : ' (sibling)';
          assert.deepEqual(byVolume(await reader.listVolumeStates()), [states[0], states[2]], `listVolumeStates()${who}`);
          assert.equal(await reader.getVolumeState('vol-a'), undefined, `getVolumeState(cleared)${who}`);
          assert.deepEqual(await reader.getVolumeState('vol-a2'), states[2], `getVolumeState(vol-a2)${who}`);
        }
      },
    },
    {
      name: 'putBackup stores createdAt and updatedAt canonical (UTC, milliseconds), so listings, pages and markers follow time; a time that is no ISO-8601 date-time (a day past the end of its month too) is INVALID_INPUT and nothing is written',
      async run({ catalog, sibling }) {
        // As strings these sort c, a, b; in time b (00:30Z), c (00:45Z), a (01:00Z).
        const a = { ...catalogRecord('vol-t', '2026-12-07T01:00:00Z'), updatedAt: '2026-12-07T03:00:00+02:00' };
        const b = catalogRecord('vol-t', '2026-12-07T01:30:00.000+01:00');
        const c = catalogRecord('vol-t', '2026-12-07T00:45:00.000Z');
        for (const r of [a, b, c]) await catalog.putBackup(r);
        const got = await catalog.getBackup(a.id);
        assert.equal(got.createdAt, '2026-12-07T01:00:00.000Z');
        assert.equal(got.updatedAt, '2026-12-07T01:00:00.000Z');
        assert.equal((await catalog.getBackup(b.id)).createdAt, '2026-12-07T00:30:00.000Z');
        const inTime = [b.id, c.id, a.id];
        for (const view of sibling ? [catalog, sibling] : [catalog]) {
          assert.deepEqual(ids(await view.listBackups()), inTime);
          assert.deepEqual(ids(await view.listBackups({ volumeId: 'vol-t' })), inTime);
          assert.equal((await view.latestBackup({ volumeId: 'vol-t' }))?.id, a.id);
          for (const volumeId of [undefined, 'vol-t']) {
            for (const dir of ['asc', 'desc'] as const) {
              const walked: string[] = [];
              let marker: string | undefined;
              do {
                const page = await view.listBackupPage({ volumeId, marker, limit: 1, sort: [{ key: 'createdAt', dir }] });
                walked.push(...ids(page.backups).map(String));
                marker = page.next;
              } while (marker !== undefined && walked.length <= inTime.length);
              assert.deepEqual(walked, dir === 'asc' ? inTime : [...inTime].reverse(), `pages of ${volumeId ?? 'every volume'}, createdAt ${dir}`);
            }
          }
        }
        for (const [field, value] of [['createdAt', 'yesterday'], ['createdAt', '2026-12-07 01:00'], ['createdAt', '2026-13-40T01:00:00.000Z'], ['createdAt', '2026-02-30T01:00:00.000Z'], ['updatedAt', '2026-04-31T01:00:00+02:00'], ['updatedAt', 'Mon, 07 Dec 2026 01:00:00 GMT'], ['updatedAt', '2026-12-07T01:00:00.000']] as const) {
          const bad = { ...catalogRecord('vol-t', '2026-12-07T02:00:00.000Z'), [field]: value };
          const err = (await rejectsWithCode(catalog.putBackup(bad), 'INVALID_INPUT', `putBackup with ${field} ${value}`)) as { details?: Record<string, unknown> };
          assert.equal(err.details?.field, field);
          await rejectsWithCode(catalog.getBackup(bad.id), 'NOT_FOUND', 'getBackup of the refused record');
          // A refused replacement leaves the stored record as it was.
          await rejectsWithCode(catalog.putBackup({ ...a, [field]: value, status: 'available' }), 'INVALID_INPUT', `replacing putBackup with ${field} ${value}`);
        }
        assert.deepEqual(await catalog.getBackup(a.id), got);
        assert.deepEqual(ids(await catalog.listBackups({ volumeId: 'vol-t' })), inTime);
      },
    },
  ],
};
