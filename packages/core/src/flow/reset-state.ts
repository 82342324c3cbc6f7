import type { BackupService, VerifyOptions, VerifyProblem } from '../contracts/backup-service.js';
import type { Catalog } from '../contracts/catalog.js';
import type { BackupRecord } from '../contracts/records.js';
import type { VolumeDriver } from '../contracts/volume-driver.js';
import { CairnError, isCorrupt, isNotFound, toCairnError } from '../errors.js';
import { nowIso } from '../util/clock.js';
import { isThisProcess, ownerLocation, ownerMayBeAlive, type ProcessOwner } from '../util/process-owner.js';
import type { BackupClaims } from './backup-claims.js';
import { currentReaders, holdCount, holdRecord, isRecordHeld } from './live-records.js';
import { IN_FLOW, recoverInFlight } from './recovery.js';

/** What a reset works with: the manager's catalog, driver, claims and targets. */
export interface ResetDeps {
  catalog: Catalog;
  volumes: VolumeDriver;
  claims: BackupClaims;
  /** The target a record names; `NOT_FOUND` when it is not configured. */
  target: (name: string) => BackupService;
  /** A step that failed without failing the reset (the manager's `warning` event). */
  warn: (warning: CairnError) => void;
}

/** Cinder's backup-reset-state: the contract is BackupManager.resetState's. */
export async function resetBackupState(deps: ResetDeps, backupId: string, status: 'available' | 'error', options: VerifyOptions = {}): Promise<BackupRecord> {
  if (status !== 'available' && status !== 'error') {
    throw new CairnError('INVALID_INPUT', `a backup can be reset to available or error, not ${JSON.stringify(status)}`, { details: { status } });
  }
  return deps.claims.exclusive(backupId, async () => {
    const before = await deps.catalog.getBackup(backupId);
    if (isRecordHeld(before.id) || deps.claims.count(before.id, 'restore') > 0 || deps.claims.count(before.id, 'parent') > 0) {
      throw new CairnError('CONFLICT', `backup ${before.id} is ${before.status} in a job of this process: cancel the job instead`, { details: { backupId: before.id, status: before.status } });
    }
    if (IN_FLOW.has(before.status) && runsHere(before)) throw runningHere(before);
    // Held while it is reset, so that a recovery of this process leaves it to the reset.
    const letGo = holdRecord(before.id);
    try {
      return await resetHeld(deps, before, status, options);
    } finally {
      letGo();
    }
  });
}

async function resetHeld(deps: ResetDeps, before: BackupRecord, status: 'available' | 'error', options: VerifyOptions): Promise<BackupRecord> {
  // Judged again on every read recovery makes (the record, its volume's state, its snapshot): a
  // job that took the record since the checks above (a restore, here or in a live process of
  // this host) is left alone, and the reset refused. The reset's own hold is not a job's.
  const busy = (b: BackupRecord): boolean => holdCount(b.id) > 1 || deps.claims.count(b.id, 'restore') > 0 || runsHere(b);
  // Already in the record's section (resetState's exclusive): recovery must not take it again.
  const report = await recoverInFlight({ catalog: deps.catalog, volumes: deps.volumes, isLive: busy, only: before.id, section: (_id, fn) => fn() });
  if (report.skipped.length > 0) {
    const now = await deps.catalog.getBackup(before.id);
    throw runsHere(now) ? runningHere(now) : new CairnError('CONFLICT', `backup ${before.id} is ${now.status} in a job of this process: cancel the job instead`, { details: { backupId: before.id, status: now.status } });
  }
  for (const failed of report.errors) deps.warn(new CairnError('UNAVAILABLE', `reset of backup ${before.id}: ${failed}`, { details: { backupId: before.id } }));
  const resolved = await deps.catalog.getBackup(before.id);
  // A get-compare-put, atomic as the whole reset runs in the record's section: every removal of a
  // record runs in its section too (BackupClaims), so a delete elsewhere (one whose data delete
  // ran meanwhile, an import withdrawing its claim) removes the record before the get (NOT_FOUND)
  // or after the put, never in between to have it written back. Writes outside a section (a
  // running job's final one) are caught only as far as the compare sees them.
  const write = async (fields: Partial<BackupRecord>): Promise<BackupRecord> => {
    const current = await deps.catalog.getBackup(before.id);
    if (current.status !== resolved.status || current.updatedAt !== resolved.updatedAt) {
      throw new CairnError('CONFLICT', `backup ${before.id} changed while it was reset (now ${current.status})`, { details: { backupId: before.id, status: current.status } });
    }
    const record: BackupRecord = { ...current, owner: undefined, readers: undefined, ...fields, updatedAt: nowIso() };
    await deps.catalog.putBackup(record);
    return record;
  };
  if (status === 'error') {
    if (before.status === 'error') return write({ status: 'error', failReason: before.failReason });
    // CANCELLED, not INTERNAL (a bug): an operator declared the work on it over.
    return write({ status: 'error', failReason: `CANCELLED: reset to error by reset-state (was ${before.status})` });
  }
  const service = deps.target(resolved.service);
  let problems: VerifyProblem[];
  try {
    problems = (await service.verify(resolved, options)).problems.filter((p) => p.backupId === resolved.id);
  } catch (err) {
    if (!isNotFound(err) && !isCorrupt(err)) throw err;
    const e = toCairnError(err);
    problems = [{ backupId: resolved.id, code: e.code as VerifyProblem['code'], message: e.message }];
  }
  if (problems.length > 0) {
    const first = problems[0]!;
    await write({ status: 'error', failReason: `${first.code}: ${first.message}` });
    throw new CairnError(first.code, `backup ${resolved.id} cannot be reset to available: ${first.message}`, { details: { backupId: resolved.id, problems } });
  }
  return write({ status: 'available', failReason: undefined });
}

/**
 * Another process of this host and pid namespace that runs (its job may) and works on the record:
 * its owner, or for a `restoring` record read by readers (currentReaders) any of them (its `owner`
 * is then SHARED_READERS_OWNER when there are several, a host no process runs on). Undefined when none.
 */
function runnerHere(record: BackupRecord): ProcessOwner | undefined {
  const owners = currentReaders(record)?.map((r) => r.owner) ?? (record.owner ? [record.owner] : []);
  return owners.find((owner) => !isThisProcess(owner) && ownerLocation(owner) === 'here' && ownerMayBeAlive(owner));
}

/** Whether another process of this host runs a job on the record (runnerHere). */
const runsHere = (record: BackupRecord): boolean => runnerHere(record) !== undefined;

const runningHere = (record: BackupRecord): CairnError => {
  const owner = runnerHere(record) ?? record.owner;
  return new CairnError('CONFLICT', `backup ${record.id} is ${record.status} in process ${owner?.pid}, which is running on this host: cancel the job there`, {
    details: { backupId: record.id, status: record.status, owner },
  });
};
