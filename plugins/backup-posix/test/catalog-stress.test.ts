import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ChunkedBackupService, RepositoryCatalog, type BackupRecord, type VolumeFlowState } from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';
import { assertDistFresh, spawnChild, tempStore, type Child } from './helpers.js';

// Several processes using one repository's catalog at once (CLI commands next to `cairn serve`):
// each runs a seeded random sequence of catalog calls (fixtures/catalog-stress-child.mjs) and
// prints what it did; the invariants are then checked against those logs and the final catalog.

const SCRIPT = fileURLToPath(new URL('./fixtures/catalog-stress-child.mjs', import.meta.url));
const CHILDREN = 4;
const OPS = 60;
const SEED = 20261206;

interface Op {
  child: number;
  op: string;
  ok: boolean;
  code?: string;
  message?: string;
  t0: number;
  t1: number;
  id?: string;
  tag?: string;
  volumeId?: string;
  written?: BackupRecord | VolumeFlowState;
  value?: unknown;
}

/** byCreation (memory-catalog): creation time, then id. */
const newer = (a: BackupRecord, b: BackupRecord): number => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** Ops that may have changed record `id`: every put or delete but an ifAbsent put that was refused. */
const mutates = (o: Op, id: string): boolean =>
  o.id === id && ['put', 'putIfAbsent', 'delete', 'putOnce'].includes(o.op) && !(o.op !== 'put' && !o.ok && o.code === 'ALREADY_EXISTS');

describe('the repository catalog, used by several processes at once', () => {
  const children: Child[] = [];
  const dirs: string[] = [];
  beforeAll(() => assertDistFresh());
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.proc.exitCode === null) c.proc.kill('SIGKILL');
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  it('keeps its invariants under seeded random puts, deletes, reads and sections', async () => {
    const store = await tempStore('catalog-stress');
    dirs.push(store.directory);
    const init = await ChunkedBackupService.open(store, { name: 'posix', workers: 0, init: { chunkSize: 256 * 1024, packSize: 1024 * 1024 } });
    await init.close();
    const log = join(store.directory, 'sections.log');

    const started = Array.from({ length: CHILDREN }, (_, child) => spawnChild({ directory: store.directory, child, seed: SEED, ops: OPS, log }, SCRIPT));
    children.push(...started);
    await Promise.all(started.map((c) => c.waitFor('ready')));
    for (const c of started) c.proc.stdin!.write('go\n');
    await Promise.all(started.map((c) => c.waitFor('done')));
    expect((await Promise.all(started.map((c) => c.exited))).map((e) => e.code)).toEqual(started.map(() => 0));
    const ops = started.flatMap((c) => c.lines.filter((l) => l.event === 'op')) as unknown as Op[];
    expect(ops).toHaveLength(CHILDREN * OPS);

    // Only the refusals the contract names: ALREADY_EXISTS for ifAbsent writes, NOT_FOUND for reads.
    const expectedFailure = (o: Op): boolean => (['putOnce', 'stateOnce', 'stateMixed', 'putIfAbsent'].includes(o.op) && o.code === 'ALREADY_EXISTS') || (o.op === 'get' && o.code === 'NOT_FOUND');
    expect(ops.filter((o) => !o.ok && !expectedFailure(o))).toEqual([]);

    // No torn or mixed documents: every record read is, field for field, one that was written.
    const writtenByTag = new Map(ops.filter((o) => o.written).map((o) => [o.tag!, o.written!]));
    const reads = ops.flatMap((o): BackupRecord[] => (!o.ok || !o.value ? [] : o.op === 'list' ? (o.value as BackupRecord[]) : o.op === 'get' || o.op === 'latest' ? [o.value as BackupRecord] : []));
    for (const r of reads) expect(r).toEqual(writtenByTag.get((r.serviceData as { tag: string }).tag));
    const stateOnceTags = new Set(ops.filter((o) => o.op === 'stateOnce').map((o) => o.tag));
    for (const o of ops.filter((o) => o.op === 'state' && o.value)) {
      const state = o.value as VolumeFlowState;
      expect(state.volumeId).toBe(o.id);
      if (o.id!.startsWith('s')) expect(stateOnceTags.has(state.backupId), state.backupId).toBe(true);
      else expect(state).toEqual(writtenByTag.get(state.backupId));
    }

    // ifAbsent: exactly one winner per id tried, and that winner's record/state is what stays.
    const service = await ChunkedBackupService.open(await PosixObjectStore.open({ directory: store.directory }), { name: 'posix', workers: 0 });
    const catalog = new RepositoryCatalog(service.repository);
    for (const kind of ['putOnce', 'stateOnce']) {
      const tried = [...new Set(ops.filter((o) => o.op === kind).map((o) => o.id!))];
      for (const id of tried) {
        const winners = ops.filter((o) => o.op === kind && o.id === id && o.ok);
        expect(winners, `${kind} ${id}`).toHaveLength(1);
        const kept = kind === 'putOnce' ? (await catalog.getBackup(id)).serviceData.tag : (await catalog.getVolumeState(id))?.backupId;
        expect(kept, `${kind} ${id}`).toBe(winners[0]!.tag);
      }
    }

    // Sections: per id, enter and exit alternate, each exit by the process that entered.
    const open = new Map<string, string>();
    for (const line of (await readFile(log, 'utf8')).split('\n').filter(Boolean)) {
      const [mark, id, child] = line.split(' ') as [string, string, string];
      if (mark === 'enter') {
        expect(open.get(id), `${line}: section ${id} already held`).toBeUndefined();
        open.set(id, child);
      } else {
        expect(open.get(id), line).toBe(child);
        open.delete(id);
      }
    }
    expect([...open]).toEqual([]);

    // Reads against what was acknowledged before they began.
    const settledDelete = (id: string, read: Op): boolean =>
      ops.some((d) => d.op === 'delete' && d.ok && d.id === id && d.t1 < read.t0 && !ops.some((p) => p !== d && mutates(p, id) && p.op !== 'delete' && p.t1 > d.t0 && p.t0 < read.t1));
    /** Records certainly there (and unchanged) while `read` ran: put before it, and nothing touched their id since. */
    const settledRecords = (volumeId: string, read: Op): BackupRecord[] =>
      ops.filter((p) => p.ok && ['put', 'putIfAbsent', 'putOnce'].includes(p.op) && p.written!.volumeId === volumeId && p.t1 < read.t0 && !ops.some((q) => q !== p && mutates(q, p.id!) && q.t1 > p.t0 && q.t0 < read.t1)).map((p) => p.written as BackupRecord);
    for (const o of ops.filter((o) => o.ok && o.op === 'list')) {
      const listed = o.value as BackupRecord[];
      expect(new Set(listed.map((r) => r.id)).size, 'a record listed twice').toBe(listed.length);
      for (const r of listed) {
        expect(r.volumeId).toBe(o.volumeId);
        expect(settledDelete(r.id, o), `list at ${o.t0} returned ${r.id}, deleted before`).toBe(false);
      }
      for (const r of settledRecords(o.volumeId!, o)) expect(listed, `list at ${o.t0} lacks ${r.id}`).toContainEqual(r);
    }
    for (const o of ops.filter((o) => o.ok && o.op === 'latest')) {
      const latest = o.value as BackupRecord | null;
      const settled = settledRecords(o.volumeId!, o);
      if (latest) {
        expect(latest.volumeId).toBe(o.volumeId);
        expect(settledDelete(latest.id, o), `latest at ${o.t0} returned ${latest.id}, deleted before`).toBe(false);
      }
      for (const r of settled) expect(latest && newer(latest, r) >= 0, `latest at ${o.t0} (${latest?.id} ${latest?.createdAt}) older than ${r.id} ${r.createdAt}`).toBe(true);
    }

    // Cleared volume states: two ifAbsent wins of one id have a clear between them, and a read after
    // an acknowledged clear (with no put since) finds nothing.
    const statePuts = (id: string): Op[] => ops.filter((o) => o.op === 'stateMixed' && o.id === id && !(!o.ok && o.code === 'ALREADY_EXISTS'));
    const clears = (id: string): Op[] => ops.filter((o) => o.op === 'clearState' && o.ok && o.id === id);
    for (const id of ['t0', 't1']) {
      const wins = statePuts(id).filter((o) => o.ok).sort((a, b) => a.t0 - b.t0);
      for (let i = 1; i < wins.length; i++) {
        const [a, b] = [wins[i - 1]!, wins[i]!];
        expect(clears(id).some((c) => c.t1 > a.t0 && c.t0 < b.t1), `${id}: ifAbsent won by ${a.tag} and ${b.tag} with no clear between`).toBe(true);
      }
      for (const r of ops.filter((o) => o.op === 'state' && o.id === id && o.value)) {
        const settled = clears(id).some((c) => c.t1 < r.t0 && !statePuts(id).some((p) => p.t1 > c.t0 && p.t0 < r.t1));
        expect(settled, `${id} read at ${r.t0} after its clear`).toBe(false);
      }
    }

    // At rest, listings through the volume entries agree with a scan of every record.
    const all = await catalog.listBackups();
    for (const volumeId of ['vol-a', 'vol-b']) {
      const expected = all.filter((r) => r.volumeId === volumeId).sort(newer);
      expect(await catalog.listBackups({ volumeId }), volumeId).toEqual(expected);
      expect(await catalog.latestBackup({ volumeId }), volumeId).toEqual(expected.at(-1));
    }
    expect(await service.repository.locks.list()).toEqual([]);
    await service.close();
  }, 60_000);
});
