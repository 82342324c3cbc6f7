import { EventEmitter } from 'node:events';
import type { BackupService, VerifyOptions, VerifyReport } from '../contracts/backup-service.js';
import type { BackupPage, BackupPageQuery, Catalog } from '../contracts/catalog.js';
import type { ProgressEvent } from '../contracts/progress.js';
import { BACKUP_STATUSES, type BackupRecord, type BackupStatus, type VolumeFlowState, type VolumeFlowStatus } from '../contracts/records.js';
import type { Attachment, ChangedBlockTracking, Checkpoint, Snapshot, Volume, VolumeDriver } from '../contracts/volume-driver.js';
import { CairnError, cancelledError, hasCode, isCairnError, isRetryable, throwIfAborted, toCairnError, unlessNotFound } from '../errors.js';
import { newId, nowIso } from '../util/clock.js';
import { currentOwner } from '../util/process-owner.js';
import { RateBudget, throttleReads } from '../util/read-rate.js';
import { withRetries } from '../util/retry.js';
import { assertDescription, assertDisplayName, assertStoredName } from '../util/validate.js';
import { BackupClaims, type ReleaseClaim } from './backup-claims.js';
import { hasReader, withoutReader, withReader } from './backup-readers.js';
import { ownEntry, settleGoneReaders } from './reader-leftovers.js';
import { listVolumeViews, volumeView } from './volume-views.js';
import { assertSignal, linkedController, type Job } from './jobs.js';
import { currentReaders, holdRecord, mayBeWorkedOn, type LetGo } from './live-records.js';
import { InProcessVolumeLocks, type VolumeLocks } from './locks.js';
import { JobWaits, type JobWait } from './job-waits.js';
import { RequestOrder, type Turn } from './request-order.js';
import { IN_FLOW, TEMP_SNAPSHOT_PREFIX, recoverInFlight, type RecoveryReport } from './recovery.js';
import { pruneCheckpoints } from './checkpoint-pruning.js';
import { byCreation } from '../memory/memory-catalog.js';
import { resetBackupState } from './reset-state.js';
import { readBackRestored, type RestoreResult } from './restore-result.js';
import { assertTakesRestoreAttach } from './restore-precondition.js';
import { attachForFlow } from './flow-attach.js';
import { replacesMetadata, restoredVolumeMetadata, updateVolumeMetadata, type VolumeMetadataChange } from './volume-metadata.js';
import { RESTORE_JOB_METADATA_KEY, assertNotLeftByRestore, deleteVolumesOfJob, recordNewVolumeIntent } from './new-volume-intents.js';
import { assertNoFlow, beginVolumeFlow, endUnwrittenRestore, markErrorRestoring } from './volume-flow-states.js';
import { watchWrites } from './write-watch.js';
import { deleteVolume } from './delete-volume.js';
import { assertVerifiable, verifyAll, verifyOne } from './verify-backups.js';

export { holdRecord, isRecordHeld, mayBeWorkedOn, type LetGo } from './live-records.js';

export interface BackupManagerOptions {
  /** The volume driver whose volumes this manager backs up. */
  volumes: VolumeDriver;
  /** Backup targets by name: each key is its service's `name` (else `INVALID_INPUT`), as records name the service. */
  targets: Record<string, BackupService>;
  /** Target used when a request names none. Default: the first of `targets`. */
  defaultTarget?: string;
  catalog: Catalog;
  /** Default: in-process locks. */
  locks?: VolumeLocks;
  /**
   * Read volumes at most this many bytes per second, shared by every backup of this manager (a
   * server's `--read-rate`); a request's own `readRate` applies on top. Default: unlimited.
   */
  readRate?: number;
  /**
   * Run at most this many backups and restores ("data jobs") at once, as Cinder's
   * `backup_max_operations`: each holds a read arena, worker time and store connections. One more
   * is not refused: it is accepted as usual and its job waits in line, first come first served,
   * for a running one to end (Job.queued: `waitsFor: 'data-jobs'`). A job takes its place once it
   * holds its volume's lock, before it checks the volume again or touches it; while it waits it is
   * as a job queued behind another flow of its volume (a backup's record `creating`, its volume in
   * no flow state; a restore's new volume created, its backup claimed) and a cancel ends it at
   * once. Verify, gc and readBackup take no place. A whole number; 0 or undefined: no limit.
   * Anything else is `INVALID_INPUT` (`details.field` `maxDataJobs`).
   */
  maxDataJobs?: number;
}

export interface BackupRequest {
  volumeId: string;
  /** Base the backup on the volume's newest backup in the target whose data is complete (`available`, or `restoring`). Default false. */
  incremental?: boolean;
  /** Back up a volume in use through a temporary snapshot. Default false (refused with CONFLICT). */
  force?: boolean;
  /** Display name: 1–255 code points, no control characters (`assertDisplayName`). Default: none (`''`). */
  name?: string;
  /** Up to 255 code points; may be empty and may hold newlines and tabs, no other control characters (`assertDescription`). Default `''`. */
  description?: string;
  target?: string;
  vmConfig?: Uint8Array;
  /**
   * Read the volume at most this many bytes per second (this backup alone), so the backup does
   * not starve the volume's other users. Default: unlimited. Not applied by drivers that take
   * over the flow (`capabilities.flowOverride`): refused with NOT_SUPPORTED there.
   */
  readRate?: number;
  signal?: AbortSignal;
}

export type RestoreRequest =
  | { backupId: string; volumeId: string; signal?: AbortSignal }
  | { backupId: string; newVolume: { name?: string }; signal?: AbortSignal };

export { readBackRestored, type RestoreResult } from './restore-result.js';
export { assertVerifiable } from './verify-backups.js';

/** What the manager shows for a volume: the driver's view with the flow's state laid over it. */
export interface VolumeView extends Omit<Volume, 'status'> {
  status: Volume['status'] | VolumeFlowStatus;
  previousStatus?: string;
}

export interface BackupManagerEvents {
  progress: [ProgressEvent];
  /** A cleanup step (detach, temporary delete, state reset) failed; the flow's outcome stands. */
  warning: [CairnError];
}

/**
 * The flow core owns (Cinder's backup manager, made explicit). Drivers implement primitives; the
 * manager validates, locks, moves states, and detaches and deletes temporaries in `finally`.
 */
export class BackupManager extends EventEmitter<BackupManagerEvents> {
  private readonly volumes: VolumeDriver;
  private readonly targets: Record<string, BackupService>;
  private readonly defaultTarget: string;
  private readonly catalog: Catalog;
  private readonly locks: VolumeLocks;
  /** The budget every backup of this manager shares (`readRate`), if any. */
  private readonly readBudget: RateBudget | undefined;
  /** Restores and incrementals claim the backups they use; deleteBackup refuses claimed ones. */
  private readonly claims: BackupClaims;
  private readonly jobs = new Map<string, Job>();
  /** The order of this manager's backup requests per volume, which their jobs run in. */
  private readonly requestOrder = new RequestOrder();
  /** What its jobs wait for before they run (their volume, a place: maxDataJobs), and where each stands. */
  private readonly waits: JobWaits;

  constructor(options: BackupManagerOptions) {
    super();
    this.volumes = options.volumes;
    this.targets = options.targets;
    const names = Object.keys(options.targets);
    if (names.length === 0) throw new CairnError('INVALID_INPUT', 'a backup manager needs at least one target');
    for (const [key, service] of Object.entries(options.targets)) {
      // Records name their service; every later lookup of a record's target goes by that name.
      if (service.name !== key) {
        throw new CairnError('INVALID_INPUT', `target ${key} holds backup service ${service.name}: a target's key must be its service's name`, { details: { target: key, service: service.name } });
      }
    }
    this.defaultTarget = options.defaultTarget ?? names[0]!;
    if (!this.targets[this.defaultTarget]) throw new CairnError('INVALID_INPUT', `default target ${this.defaultTarget} is not configured`);
    this.catalog = options.catalog;
    this.claims = new BackupClaims(this.catalog);
    this.locks = options.locks ?? new InProcessVolumeLocks();
    if (options.readRate !== undefined && !(Number.isFinite(options.readRate) && options.readRate > 0)) throw new CairnError('INVALID_INPUT', `readRate must be a positive number of bytes per second, got ${String(options.readRate)}`);
    this.readBudget = options.readRate ? new RateBudget(options.readRate) : undefined;
    this.waits = new JobWaits(options.maxDataJobs ?? 0);
  }

  /** Backs up a volume and resolves with the `available` record. See `startBackup`. */
  async backup(request: BackupRequest): Promise<BackupRecord> {
    return (await this.startBackup(request)).done;
  }

  /**
   * Validates and starts a backup. Rejects at once (no record) with `NOT_FOUND` for an unknown
   * volume or target, `CONFLICT` for a volume in use without `force`, in a driver status other than `available` and `in-use` (`error`), busy in another flow
   * (`details: {volumeId, volumeStatus}`) or left `error_restoring` (a partial restore:
   * `details.volumeStatus`; restore it again first),
   * `INVALID_INPUT` for an incremental with no full backup or a bad `name` or `description`
   * (details `{ field, reason }`) or a `signal` that is not an AbortSignal (`details.field`
   * `signal`), `NOT_SUPPORTED` for an incremental the target cannot take.
   *
   * The job waits for the volume's lock, then checks the volume again (the same `CONFLICT`s; a
   * volume attached read-write after that check, which refuses the job's read-only attach, is
   * judged again so: `CONFLICT` without `force`, with it copied through a snapshot) and
   * copies the volume as it is then: the record's `size` and, for an incremental, its `parentId`
   * (the newest backup at that moment whose data is complete, `available` or `restoring`: a restore
   * only reads it; claimed so it cannot be deleted meanwhile) are
   * those of the copy. The jobs of one volume that this manager starts run in the order their
   * requests were made, at once too (RequestOrder), and their records' `createdAt` is in that
   * order: incrementals requested at once form one chain, each the parent of the next. The job's `done` settles with the record in `available`, or rejects (record
   * in `error`; `CANCELLED` when cancelled, at once when it still waits for the lock or for a
   * place among the data jobs: maxDataJobs). While it waits, `job.queued()` says what for and its place. Once the
   * service has committed the backup, a cancel is too late: the backup completes `available`.
   * Not idempotent.
   */
  async startBackup(request: BackupRequest): Promise<Job> {
    if (request.name !== undefined) assertDisplayName(request.name, 'name');
    if (request.description !== undefined) assertDescription(request.description, 'description');
    const service = this.target(request.target);
    if (request.readRate !== undefined && !(Number.isFinite(request.readRate) && request.readRate > 0)) {
      throw new CairnError('INVALID_INPUT', `readRate must be a positive number of bytes per second, not ${String(request.readRate)}`);
    }
    if (request.readRate !== undefined && this.volumes.capabilities.flowOverride) {
      throw new CairnError('NOT_SUPPORTED', `driver ${this.volumes.name} runs backups itself (flow override): readRate cannot be applied`);
    }
    // Checked before the turn is taken and the record written: linking it to the job cannot fail then.
    assertSignal(request.signal);
    // Taken before the first await, as is the record's creation time: the jobs of one volume's
    // requests run in request order (RequestOrder), and their records' createdAt is in that order
    // too, so each incremental's parent (the newest complete backup by createdAt) is the one before.
    const now = nowIso();
    const turn = this.requestOrder.take(request.volumeId);
    const turnOrder = this.waits.order();
    let volume: Volume;
    let parent: BackupRecord | undefined;
    try {
      volume = await this.volumes.getVolume(request.volumeId);
      await assertNoFlow(this.catalog, volume.id, 'backup');
      await assertNotLeftByRestore(this.catalog, volume);
      this.assertMayBackUp(volume, request);
      if (request.incremental) {
        if (!service.describe().capabilities.incremental) {
          throw new CairnError('NOT_SUPPORTED', `target ${service.name} does not take incremental backups`);
        }
        parent = await this.latestParent(volume.id, service.name);
        if (!parent) throw new CairnError('INVALID_INPUT', `volume ${volume.id} has no available backup to base an incremental on`);
      }
    } catch (err) {
      turn.pass();
      throw err;
    }
    const record: BackupRecord = {
      id: newId(),
      name: request.name ?? '',
      description: request.description ?? '',
      volumeId: volume.id,
      volumeName: volume.name,
      size: volume.size,
      status: 'creating',
      owner: currentOwner(),
      service: service.name,
      // No parent yet: the job names the one it claims once it holds the volume (claimParent),
      // and a parent named before would keep a backup it may never use from being deleted.
      incremental: !!parent,
      volumeMetadata: { ...volume.metadata },
      serviceData: {},
      createdAt: now,
      updatedAt: now,
    };
    // Held (live-records) from before the record is written until the job's last write of it.
    const letGo = holdRecord(record.id);
    try {
      await this.catalog.putBackup(record, { ifAbsent: true });
    } catch (err) {
      letGo();
      turn.pass();
      throw err;
    }
    const controller = linkedController(request.signal);
    const progress = { bytesDone: 0, bytesTotal: volume.size };
    const wait = this.waits.open(volume.id, turnOrder);
    const job: Job = {
      id: record.id,
      kind: 'backup',
      backupId: record.id,
      volumeId: volume.id,
      done: this.runBackup(record, parent, service, request, turn, wait, controller.signal, progress).finally(() => {
        letGo();
        controller.unlink();
      }),
      cancel: (reason) => controller.abort(new CairnError('CANCELLED', reason ?? 'cancelled by request')),
      progress: () => ({ ...progress }),
      queued: () => wait.place(),
    };
    this.track(job);
    return job;
  }

  private async runBackup(
    record: BackupRecord,
    parent: BackupRecord | undefined,
    service: BackupService,
    request: BackupRequest,
    turn: Turn,
    wait: JobWait,
    signal: AbortSignal,
    progress: { bytesDone: number; bytesTotal: number },
  ): Promise<BackupRecord> {
    let release: (() => Promise<void>) | undefined;
    let releaseParent: ReleaseClaim | undefined;
    let attachment: Attachment | undefined;
    let snapshot: Snapshot | undefined;
    let checkpoint: Checkpoint | undefined;
    let committed = false;
    let flowStarted = false;
    /** The backup's own error, once it has failed: what the job rejects with. */
    let failure: CairnError | undefined;
    /** The driver's tracking, once the volume is known to have it (Volume.capabilities). */
    let cbt: ChangedBlockTracking | undefined;
    try {
      try {
        // A cancel while queued ends the job here, before it touches the volume. The job waits for
        // its turn (request order), then for the lock, and passes the turn on once it holds it;
        // then, holding the volume, for a place among the data jobs (maxDataJobs).
        await turn.wait(signal);
        wait.awaitLock();
        try {
          release = await this.locks.acquire(record.volumeId, signal);
        } finally {
          turn.pass();
        }
        wait.holdVolume();
        await wait.takePlace(signal);
        throwIfCancelled(signal);
        await assertNoFlow(this.catalog, record.volumeId, 'backup');
        if (parent) {
          // The parent is the newest complete backup once this one holds the volume: a backup
          // queued behind another of the same volume builds on that one (whose checkpoint is the
          // one kept), not on what was newest when it was requested. The claim keeps it from being
          // deleted until this backup ends.
          const claimed = await this.claimParent(record.volumeId, service.name, async (chosen) => {
            // Written in the parent's section: a delete of the parent in another process, whose
            // check runs in that section too, then finds this `creating` child (deleteHeld).
            record.parentId = chosen.id;
            await this.catalog.putBackup({ ...record, updatedAt: nowIso() });
          }, signal);
          if (!claimed) throw new CairnError('INVALID_INPUT', `volume ${record.volumeId} no longer has an available backup to base an incremental on`);
          [parent, releaseParent] = claimed;
        }
        // The record describes the volume as copied, which may have changed since the request.
        const volume = await this.volumes.getVolume(record.volumeId);
        // A volume its driver cannot track (a qcow2 v2 image) gets no checkpoint: the backup reads it all.
        if (this.volumes.capabilities.changedBlockTracking && volume.capabilities?.changedBlockTracking !== false) cbt = this.volumes.changedBlockTracking;
        await assertNotLeftByRestore(this.catalog, volume);
        // Checked again as it is now: a volume attached read-write while the job waited is in use,
        // and is copied through a snapshot only when the request said `force`.
        this.assertMayBackUp(volume, request);
        Object.assign(record, { size: volume.size, volumeName: volume.name, volumeMetadata: { ...volume.metadata }, updatedAt: nowIso() });
        progress.bytesTotal = volume.size;
        await this.catalog.putBackup(record);
        await beginVolumeFlow(this.catalog, volume, 'backing-up', record.id, (id, fn) => this.claims.exclusive(id, fn, signal));
        flowStarted = true;
        const sink = this.progressSink(record.id, 'backup', progress);
        const job = { backup: record, parent, volume, vmConfig: request.vmConfig, signal, progress: sink };
        let result;
        if (this.volumes.capabilities.flowOverride && this.volumes.flowOverride) {
          result = await this.volumes.flowOverride.backupVolume({ volume, backup: record, parent, service, signal, progress: sink });
        } else {
          if (cbt) {
            checkpoint = await cbt.createCheckpoint(volume.id);
            // Named in the catalog while the copy runs, so that a backup of this volume ending in
            // another process keeps it (pruneCheckpoints). The error record written below names
            // none: the checkpoint is the available record's. The service gets it with the record
            // (a repository keeps it in the manifest, where importRecord takes it from).
            await this.catalog.putBackup({ ...record, checkpointId: checkpoint.id, updatedAt: nowIso() });
            job.backup = { ...record, checkpointId: checkpoint.id };
          }
          // An `available` volume is attached as it is; one in use, at the check above or since
          // (inUseSinceCheck), is copied through a temporary snapshot.
          let source = volume;
          if (source.status !== 'in-use') {
            attachment = await attachForFlow(this.volumes, { kind: 'volume', id: volume.id }, 'ro', signal).catch(async (err: unknown) => {
              source = await this.inUseSinceCheck(err, volume, request, signal);
              return undefined;
            });
          }
          if (!attachment) {
            job.volume = source;
            snapshot = await this.pointInTime(source, record.id);
            attachment = await attachForFlow(this.volumes, { kind: 'snapshot', id: snapshot.id }, 'ro', signal);
          }
          record.size = attachment.device.size;
          const changedSince = cbt && parent?.checkpointId && service.describe().capabilities.changedBlockTracking ? parent.checkpointId : undefined;
          let device = attachment.device;
          if (this.readBudget) device = throttleReads(device, this.readBudget, signal);
          if (request.readRate) device = throttleReads(device, new RateBudget(request.readRate), signal);
          result = await service.backup(job, { device, changedSince });
        }
        // The service has committed the backup: a cancel from here on is too late, and a failure
        // (the catalog write) removes the committed data before the record goes to `error`.
        committed = true;
        Object.assign(record, {
          status: 'available',
          serviceData: result.serviceData,
          stats: result.stats,
          checkpointId: checkpoint?.id,
          owner: undefined,
          updatedAt: nowIso(),
        });
      } catch (err) {
        failure = !committed && signal.aborted && !(isCairnError(err) && err.code === 'CANCELLED') ? new CairnError('CANCELLED', 'backup cancelled', { cause: err }) : toCairnError(err);
      }
      // Retried when they fail with a retryable code: an attachment or a temporary snapshot left
      // behind keeps the volume in use, or takes space, until someone removes it by hand.
      await this.cleanup(async () => attachment && retrying(() => this.volumes.detach(attachment!.id)));
      await this.cleanup(async () => snapshot && retrying(() => this.volumes.deleteSnapshot(snapshot!.id)));
      // The volume's state and the temporary snapshot are settled while the record is still
      // `creating`, and only then is the record's final status written: a recovery elsewhere that
      // finds the record no longer `creating` (so no longer live) reads the volume's state after
      // this, and never clears the state of a flow that began on the volume since (recovery.ts,
      // liveNow).
      if (flowStarted) await this.cleanup(() => this.catalog.clearVolumeState(record.volumeId));
      if (!failure) {
        try {
          await this.catalog.putBackup(record);
        } catch (err) {
          failure = toCairnError(err);
        }
      }
      if (failure) {
        const e = failure;
        if (committed) await this.cleanup(() => service.delete(record));
        // A failure to write the error record is a warning: the job rejects with the backup's own error.
        await this.catalog.putBackup({ ...record, status: 'error', owner: undefined, checkpointId: undefined, failReason: `${e.code}: ${e.message}`, updatedAt: nowIso() }).catch((err) => {
          const w = toCairnError(err);
          this.emit('warning', new CairnError(w.code, `backup ${record.id} failed (${e.code}) and its error record could not be written: ${w.message}`, { cause: err, details: { backupId: record.id } }));
        });
      }
      // After the final write: pruning keeps the checkpoint the newest available record names.
      const tracking = cbt;
      if (tracking && checkpoint) await this.cleanup(() => (failure ? tracking.deleteCheckpoint(record.volumeId, checkpoint!.id) : pruneCheckpoints(tracking, this.catalog, record, checkpoint!, parent)));
      if (failure) throw failure;
      return { ...record };
    } finally {
      turn.pass();
      if (releaseParent) await this.cleanup(() => releaseParent!());
      wait.end();
      if (release) await release();
    }
  }

  /**
   * Claims the newest backup of the volume in the target that an incremental may build on
   * (latestParent: `available` or `restoring`) as a parent, and runs `record(parent)` (which names
   * it in the child's record) in the claim's section. A candidate that stops being one before it
   * is claimed (being deleted) gives way to the next newest. Undefined when there is none. The
   * claim keeps the parent from being deleted whatever its status: a restoring parent goes back
   * to `available` when its restores end, still claimed.
   */
  private async claimParent(volumeId: string, service: string, record: (parent: BackupRecord) => Promise<void>, signal: AbortSignal): Promise<[BackupRecord, ReleaseClaim] | undefined> {
    for (;;) {
      const candidate = await this.latestParent(volumeId, service);
      if (!candidate) return undefined;
      let current: BackupRecord | undefined;
      const release = await this.claims.claim(candidate.id, 'parent', async () => {
        current = await unlessNotFound(this.catalog.getBackup(candidate.id));
        if (!current || !PARENT_STATUSES.has(current.status)) return false;
        await record(current);
        return true;
      }, signal);
      if (release) return [current!, release];
    }
  }

  /**
   * As Cinder: only an `available` or `in-use` volume is backed up; any other driver status
   * (`error`: the driver cannot vouch for its contents) is `CONFLICT` (`details.volumeId`,
   * `details.volumeStatus`), with or without `force`. `CONFLICT` for an in-use volume without
   * `request.force`; `NOT_SUPPORTED` for an in-use volume the driver can neither snapshot nor back
   * up itself. Checked at the request and again once the job holds the volume (its status may have
   * changed while the job waited).
   */
  private assertMayBackUp(volume: Volume, request: Pick<BackupRequest, 'force'>): void {
    if (volume.status !== 'available' && volume.status !== 'in-use') {
      throw new CairnError('CONFLICT', `volume ${volume.id} is ${volume.status}: only an available or in-use volume can be backed up`, {
        details: { volumeId: volume.id, volumeStatus: volume.status },
      });
    }
    if (volume.status === 'in-use' && !request.force) {
      throw new CairnError('CONFLICT', `volume ${volume.id} is in use; pass force to back it up through a snapshot`);
    }
    if (volume.status === 'in-use' && !this.volumes.capabilities.snapshots && !this.volumes.capabilities.flowOverride) {
      throw new CairnError('NOT_SUPPORTED', `driver ${this.volumes.name} cannot snapshot, so in-use volume ${volume.id} cannot be backed up`);
    }
  }

  /**
   * Judges the refusal `err` of the read-only attach of `volume`, `available` at the job's check
   * (assertMayBackUp). A volume attached read-write since (a VM started meanwhile) refuses it with
   * `BUSY`, still after attachForFlow's retries, and is then `in-use`: read again, it is judged
   * as the check judges it now, with the same error (`CONFLICT` without `request.force`,
   * `NOT_SUPPORTED` when the driver cannot snapshot it), or, with `force`, resolves with the
   * volume as read, to be copied through a temporary snapshot like one in use at the check.
   * Rejects with `err` itself for any other error, a cancel, a volume that cannot be read again,
   * and a `BUSY` of a volume still not `in-use` (attached read-only by someone, or read-write
   * and detached since).
   */
  private async inUseSinceCheck(err: unknown, volume: Volume, request: Pick<BackupRequest, 'force'>, signal: AbortSignal): Promise<Volume> {
    if (!hasCode(err, 'BUSY') || signal.aborted) throw err;
    const now = await this.volumes.getVolume(volume.id).catch(() => undefined);
    if (now?.status !== 'in-use') throw err;
    this.assertMayBackUp(now, request);
    return now;
  }

  /**
   * Takes the temporary snapshot of an in-use volume, quiescing around it when the driver can. A
   * thaw that fails fails the backup with its error (the guest may still be frozen: that must not
   * pass as a warning), and the snapshot taken is deleted first (best effort; recover() deletes a
   * temporary snapshot left anyway), since the caller never gets it to clean up.
   */
  private async pointInTime(volume: Volume, backupId: string): Promise<Snapshot> {
    const q = this.volumes.capabilities.quiesce ? this.volumes.quiesce : undefined;
    if (q) await q.freeze(volume.id);
    let snapshot: Snapshot | undefined;
    try {
      snapshot = await this.volumes.createSnapshot(volume.id, `${TEMP_SNAPSHOT_PREFIX}${backupId}`);
    } finally {
      if (q) {
        await q.thaw(volume.id).catch(async (err: unknown) => {
          if (snapshot) await this.cleanup(() => this.volumes.deleteSnapshot(snapshot!.id));
          throw err;
        });
      }
    }
    return snapshot;
  }

  /**
   * Restores a backup and resolves with the record and the volume read back after the restore
   * (readBackRestored). See `startRestore`. Once the job has succeeded, so does this: a volume
   * that cannot be read back then (deleted meanwhile, a driver failure) comes as it was when the
   * restore began, with the reason in `volumeError`.
   */
  async restore(request: RestoreRequest): Promise<RestoreResult> {
    const { job, volume, metadataKept } = await this.startRestore(request);
    return readBackRestored(this, await job.done, volume, metadataKept);
  }

  /**
   * Validates and starts a restore. Rejects at once with `NOT_FOUND` (backup, volume),
   * `CONFLICT` (backup neither `available` nor `restoring` by readers that name themselves,
   * BackupRecord.readers; volume not `available`), `INVALID_INPUT` (volume smaller than the
   * backup; a `signal` that is not an AbortSignal, `details.field` `signal`, nothing claimed), `BUSY` (an existing volume someone has attached, read-only too: the driver's
   * read-write attach refuses it, assertTakesRestoreAttach; not judged while a job of this manager
   * works on the volume, which the restore waits for; the probe's detach failing still after its
   * retries, the detach's code with `details: {volumeId, attachmentId}`, the probe left attached). Restores of one backup, to new or existing
   * volumes, in one process or several, may run at once.
   *
   * The job waits for the volume's lock (then, holding it, for a place among the data jobs:
   * maxDataJobs; `job.queued()` says what it waits for), then checks the backup and an existing volume again
   * (the same codes; `NOT_FOUND` when the backup was deleted meanwhile) and claims the backup:
   * it is `restoring`, and cannot be deleted, until the last of its restores ends, which puts it
   * back to `available` (never recreating a record). Its read-write attach fails with `BUSY`
   * while anyone has the volume attached (one attached read-only is `available` to the driver;
   * an attachment gone within about a second, retried: flow-attach.ts). A job that fails before it writes (those
   * checks, the attach, a cancel while it waits, a service that fails before its first write:
   * the backup's data gone, say) leaves an existing volume as it was (one that was
   * `error_restoring` stays so); once the service has begun writing (a driver that restores
   * itself, `flowOverride`: once it is called), a failure leaves an existing volume
   * `error_restoring`. Once the volume holds the
   * whole backup, flushed, the restore is done: a cancel is too late, and the job succeeds. The
   * job's `done` settles with the backup's record.
   *
   * A new volume is the restore's own, and is never left behind unaccounted. Before it is created,
   * the backup is claimed (here, not in the job: `restoring` at once) and the intent to create it
   * is recorded in the catalog (a NewVolumeIntent: new-volume-intents.ts); the volume
   * carries the job's id in its metadata (`RESTORE_JOB_METADATA_KEY`, kept once restored). The
   * intent is the job's last write, after the volume's state is cleared and the claim released,
   * so a process that dies before the job is done leaves it, and recovery deletes the volume (an
   * intent left would have recovery delete the volume): an intent that cannot be deleted fails
   * the job. On any failure the job deletes
   * it (a detach or delete failing with a retryable code, `BUSY` or
   * `UNAVAILABLE`, is retried first). When it still cannot, the volume is left `error_restoring`
   * with a `warning` (the delete's code, `details.volumeId` and `details.backupId`), backups and
   * restores of it are refused with `CONFLICT`, and `recover()` deletes it (`removedVolumes`), as
   * it deletes the volume of a restore whose process died at any point.
   *
   * `metadataKept` is set when the volume is an existing one whose driver cannot replace its
   * metadata (RestoreResult.metadataKept): hand it to readBackRestored with the volume.
   */
  async startRestore(request: RestoreRequest): Promise<{ job: Job; volume: Volume; metadataKept?: true }> {
    // Checked before the backup is claimed or a volume made: linking it to the job cannot fail then.
    assertSignal(request.signal);
    const backup = await this.catalog.getBackup(request.backupId);
    this.assertRestorable(backup, this.claims.count(backup.id, 'restore'));
    const service = this.target(backup.service);
    // Typed as one or the other, but a caller's JSON may name neither: a CairnError, not a TypeError.
    if (!('volumeId' in request) && (typeof request.newVolume !== 'object' || request.newVolume === null)) {
      throw new CairnError('INVALID_INPUT', 'a restore names an existing volume (volumeId) or a new one (newVolume)', { details: { field: 'volumeId' } });
    }
    // Checked here too, not left to the driver: a new volume's name is the caller's input.
    if ('newVolume' in request && request.newVolume?.name !== undefined) assertDisplayName(request.newVolume.name, 'newVolume.name');
    const jobId = newId();
    let volume: Volume;
    let owned: NewVolume | undefined;
    if ('volumeId' in request) {
      volume = await this.restoreTarget(request.volumeId, backup);
      // Refused here, not only by the job, when the volume cannot be attached read-write (someone
      // reads it). Not probed while a job of this manager works on the volume: the restore waits
      // for it, and the probe could make its attach fail. The probe's detach is retried whatever
      // its error (an idempotent call: restore-precondition.ts): nothing else would detach it.
      if (!this.listJobs().some((j) => j.volumeId === volume.id)) {
        await assertTakesRestoreAttach(this.volumes, volume.id, (id) => withRetries(() => this.volumes.detach(id), CLEANUP_RETRY_MS));
      }
    } else {
      owned = await this.createRestoreVolume(jobId, backup, request.newVolume.name, request.signal);
      volume = owned.volume;
    }
    const controller = linkedController(request.signal);
    const progress = { bytesDone: 0, bytesTotal: backup.size };
    const wait = this.waits.open(volume.id);
    const job: Job = {
      id: jobId,
      kind: 'restore',
      backupId: backup.id,
      volumeId: volume.id,
      done: this.runRestore(owned?.backup ?? backup, volume, owned, service, wait, controller.signal, progress).finally(controller.unlink),
      cancel: (reason) => controller.abort(new CairnError('CANCELLED', reason ?? 'cancelled by request')),
      progress: () => ({ ...progress }),
      queued: () => wait.place(),
    };
    this.track(job);
    return 'volumeId' in request && !replacesMetadata(this.volumes) ? { job, volume, metadataKept: true } : { job, volume };
  }

  /**
   * Changes a volume's key/value metadata (Cinder's volume metadata API): `replace` all of it, or
   * `set` and `unset` keys (volume-metadata.ts), through the driver's atomic setVolumeMetadata; resolves
   * with the volume as getVolume shows it. Keys starting with `cairn.` are Cairn's own: the
   * volume keeps its own, and a change naming one is `INVALID_INPUT` (`details.reason`
   * `reserved_key`), as is metadata that does not map strings to strings (`{replace: undefined}`
   * too), an empty key, a key or value over 255 characters (Cinder's limits: volume-metadata.ts
   * METADATA_MAX_LENGTH) and a key holding a control character (`control_character`);
   * nothing is changed then.
   * `NOT_FOUND` for an unknown volume; `NOT_SUPPORTED` when the driver lacks
   * `capabilities.volumeMetadata`; `CONFLICT` (`details: {volumeId, volumeStatus}`) while a backup
   * or restore works on the volume (`backing-up`, `restoring-backup`, which a running restore's
   * new volume is from its creation), judged from the catalog's state when the change is made
   * (it does not wait for the volume's lock: a flow that begins just after it is not refused, and a
   * restore's own replacement, made at its end, comes after it). A volume left `error_restoring`
   * may be changed. set/unset read the metadata and replace it: of two changes made at once, the
   * later replacement wins.
   */
  async updateVolumeMetadata(volumeId: string, change: VolumeMetadataChange): Promise<VolumeView> {
    const volume = await updateVolumeMetadata({ catalog: this.catalog, volumes: this.volumes }, volumeId, change);
    return this.getVolume(volume.id);
  }

  /**
   * Claims `backup` for a restore to a new volume, records the intent to create it, then creates
   * it (startRestore). On a failure nothing is left: a volume the driver's failed create left after
   * all (VolumeDriver.createVolume does not promise none: a sidecar store's discard can fail) is
   * found by the job's id in its metadata and deleted, then the intent and the claim go. One that
   * cannot be deleted keeps the intent, so the volume shows `error_restoring` and recover() deletes
   * it; an intent whose clear fails is cleared by recover() too. `backup` is as startRestore read
   * it; the result's is as claimed.
   */
  private async createRestoreVolume(jobId: string, backup: BackupRecord, name: string | undefined, signal: AbortSignal | undefined): Promise<NewVolume> {
    // Held (live-records) from before the claim may write `restoring` until the job's release.
    const letGo = holdRecord(backup.id);
    let release: ReleaseClaim | undefined;
    let intended = false;
    try {
      [backup, release] = await this.claimRestore(backup.id, signal);
      await recordNewVolumeIntent(this.catalog, jobId, backup.id, ownEntry(backup, this.claims.readerId));
      intended = true;
      const metadata = { ...backup.volumeMetadata, [RESTORE_JOB_METADATA_KEY]: jobId };
      const volume = await this.volumes.createVolume({ size: backup.size, name: name ?? `restore-${backup.id}`, metadata });
      return { volume, backup, release, letGo, jobId };
    } catch (err) {
      if (intended) {
        await this.cleanup(async () => {
          const { failed } = await deleteVolumesOfJob(this.volumes, jobId);
          if (failed.length > 0) throw failed[0]!.error;
          await this.catalog.deleteNewVolumeIntent(jobId);
        });
      }
      if (release) await this.cleanup(() => release!(() => this.endRestoring(backup.id)));
      letGo();
      throw err;
    }
  }

  /**
   * Claims `backupId` for a restore or a readBackup: `restoring`, this manager among its readers
   * (backup-readers.ts), whoever else reads it. `CONFLICT` when it is neither available nor
   * restoring by readers (assertRestorable), `NOT_FOUND` when it is gone. Resolves with the record
   * as claimed and the release.
   */
  private async claimRestore(backupId: string, signal: AbortSignal | undefined): Promise<[BackupRecord, ReleaseClaim]> {
    let claimed!: BackupRecord;
    const release = await this.claims.claim(backupId, 'restore', async (restoring) => {
      const current = await this.catalog.getBackup(backupId);
      this.assertRestorable(current, restoring);
      // This manager's first claim adds its entry to the record's readers (backup-readers.ts);
      // its other claims share that entry while the record still has it (a reset elsewhere may
      // have dropped it: the entry is then written again, else the other readers' last release
      // would end this manager's reads).
      if (restoring > 0 && current.status === 'restoring' && hasReader(current, this.claims.readerId)) {
        claimed = current;
        return true;
      }
      claimed = withReader(current, this.claims.readerId);
      await settleGoneReaders(this.catalog, current);
      await this.catalog.putBackup(claimed);
      return true;
    }, signal);
    // The check returns true or throws: a claim is always taken here.
    return [claimed, release!];
  }

  /**
   * `CONFLICT` unless `backup` may be restored here: `available`, or `restoring` by this
   * manager's other restores of it (`held`: their claims) or by readers of any process
   * (BackupRecord.readers). Restores only read a backup, so any number may run at once, in any
   * processes, to new and existing volumes alike; one left `restoring` by an older Cairn (no
   * `readers` that its `owner` agrees with, currentReaders: it would end it without regard to
   * others) is refused.
   */
  private assertRestorable(backup: BackupRecord, held: number): void {
    if (backup.status === 'available' || (backup.status === 'restoring' && (held > 0 || currentReaders(backup) !== undefined))) return;
    throw new CairnError('CONFLICT', `backup ${backup.id} is ${backup.status}, not available`);
  }

  /**
   * An existing volume a restore may overwrite: `available`, in no flow but `error_restoring`, not
   * left by a failed restore to a new volume (recover() deletes those), large enough.
   */
  private async restoreTarget(volumeId: string, backup: BackupRecord): Promise<Volume> {
    const volume = await this.volumes.getVolume(volumeId);
    await assertNoFlow(this.catalog, volume.id, 'restore');
    await assertNotLeftByRestore(this.catalog, volume);
    if (volume.status !== 'available') throw new CairnError('CONFLICT', `volume ${volume.id} is ${volume.status}, not available`);
    if (volume.size < backup.size) {
      throw new CairnError('INVALID_INPUT', `volume ${volume.id} (${volume.size} bytes) is smaller than backup ${backup.id} (${backup.size} bytes)`);
    }
    return volume;
  }

  private async runRestore(
    backup: BackupRecord,
    volume: Volume,
    owned: NewVolume | undefined,
    service: BackupService,
    wait: JobWait,
    signal: AbortSignal,
    progress: { bytesDone: number; bytesTotal: number },
  ): Promise<BackupRecord> {
    const created = owned !== undefined;
    let release: (() => Promise<void>) | undefined;
    // A new volume's restore has claimed the backup already (createRestoreVolume).
    let releaseBackup: ReleaseClaim | undefined = owned?.release;
    let attachment: Attachment | undefined;
    let letGo: LetGo | undefined = owned?.letGo;
    let flowStarted = false;
    /** Whether the volume may have been written: an existing one is `error_restoring` after a failure only then. */
    let touched = () => false;
    /** The `error_restoring` state this restore took over, put back when it fails having written nothing. */
    let replaced: VolumeFlowState | undefined;
    let committed = false;
    /** Why a committed restore to a new volume still failed: its intent could not be deleted. */
    let unsettled: unknown;
    try {
      // A cancel while queued ends the job here, before it touches the volume or the backup: it
      // waits for the volume's lock, then, holding it, for a place among the data jobs (maxDataJobs).
      release = await this.locks.acquire(volume.id, signal);
      wait.holdVolume();
      await wait.takePlace(signal);
      throwIfCancelled(signal);
      if (!owned) {
        volume = await this.restoreTarget(volume.id, backup);
        // Held (live-records) from before the claim may write `restoring` until the claim's
        // release has settled; each restore of the backup holds it, so it stays held while any of
        // them runs.
        letGo = holdRecord(backup.id);
        [backup, releaseBackup] = await this.claimRestore(backup.id, signal);
      }
      throwIfCancelled(signal);
      const override = this.volumes.capabilities.flowOverride ? this.volumes.flowOverride : undefined;
      // Attached before the flow begins: an attach the driver refuses (BUSY: someone else has the
      // volume attached, still after attachForFlow's retries) fails the job before it writes,
      // leaving the volume as it was.
      if (!override) attachment = await attachForFlow(this.volumes, { kind: 'volume', id: volume.id }, 'rw', signal);
      replaced = await beginVolumeFlow(this.catalog, volume, 'restoring-backup', backup.id, (id, fn) => this.claims.exclusive(id, fn, signal), ownEntry(backup, this.claims.readerId));
      flowStarted = true;
      const sink = this.progressSink(backup.id, 'restore', progress);
      if (override) {
        // The driver writes the volume itself: whether it has begun cannot be told.
        touched = () => true;
        await override.restoreBackup({ volume, backup, service, options: { targetIsZeroed: created }, signal, progress: sink });
      } else {
        // A service that fails before its first write (the backup's data gone, a cancel) leaves
        // the volume as it was, and then not `error_restoring`.
        const watched = watchWrites(attachment!.device);
        touched = watched.touched;
        await service.restore(backup, watched.device, { signal, progress: sink, targetIsZeroed: created });
        await watched.device.flush();
      }
      // An existing volume takes the backup's metadata (restoredVolumeMetadata: Cairn's own keys
      // stay) once it holds the whole backup, flushed, as Cinder's restore puts the backup's
      // metadata after its data: a restore that fails before this leaves the volume's metadata as
      // it was. The driver replaces it atomically, so when this fails the metadata is still the
      // old, and the restore fails as after a failed write (error_restoring: restore it again).
      // A new volume got the backup's at its creation; a driver without the capability keeps the
      // volume's own (RestoreResult.metadataKept).
      if (!owned && replacesMetadata(this.volumes)) {
        await this.volumes.setVolumeMetadata(volume.id, restoredVolumeMetadata(backup.volumeMetadata ?? {}, volume.metadata));
      }
      // The commit point: the volume holds the whole backup, flushed. The restore is done; a
      // cancel from here on (or one the copy finished despite) is too late, as for a backup once
      // its service has committed it. A failure of the cleanup below is only a warning, but for
      // a new volume's intent, deleted last (below).
      committed = true;
    } catch (err) {
      throw signal.aborted && !(isCairnError(err) && err.code === 'CANCELLED') ? new CairnError('CANCELLED', 'restore cancelled', { cause: err }) : toCairnError(err);
    } finally {
      // Retried when it fails with a retryable code: an attachment left would keep a new volume
      // from being deleted, and an existing one in use.
      await this.cleanup(async () => attachment && retrying(() => this.volumes.detach(attachment!.id)));
      // The volume's state is settled while the backup is still `restoring`, and only then may the
      // claim's release end that: a recovery elsewhere that finds the record no longer `restoring`
      // (so no longer live) reads the volume's state after this, and never takes a restore that
      // ended for one that was interrupted (it would mark a restored volume error_restoring).
      if (committed) {
        await this.cleanup(() => this.catalog.clearVolumeState(volume.id));
      } else if (owned) {
        await this.dropNewVolume(volume, backup.id, owned.jobId, flowStarted);
      } else if (flowStarted && touched()) {
        await this.cleanup(() => markErrorRestoring(this.catalog, volume.id, backup.id));
      } else if (flowStarted) {
        await this.cleanup(() => endUnwrittenRestore(this.catalog, volume.id, replaced));
      }
      if (releaseBackup) await this.cleanup(() => releaseBackup!(() => this.endRestoring(backup.id)));
      // A new volume is the caller's once its intent is gone: deleted last, after its state is
      // cleared and the claim released (the record's final write), and before the job reports
      // done, so a process that dies at any step before leaves the intent, and recovery deletes
      // the volume (the caller was not told it is restored; a retry makes one volume, not a
      // second). Until the hold below is let go, the intent's reader is alive, so no recovery
      // takes it meanwhile (recoverNewVolumeIntents). Retried when that fails with a retryable
      // code; an intent left would have recovery delete the volume after the job succeeded, so a
      // failure here fails the job, which deletes the volume as after any failure.
      if (committed && owned) {
        try {
          await retrying(() => this.catalog.deleteNewVolumeIntent(owned.jobId));
        } catch (err) {
          unsettled = err;
          await this.dropNewVolume(volume, backup.id, owned.jobId, flowStarted);
        }
      }
      letGo?.();
      wait.end();
      if (release) await release();
    }
    if (unsettled !== undefined) throw toCairnError(unsettled);
    return this.catalog.getBackup(backup.id).catch(() => ({ ...backup, status: 'available' as const, owner: undefined }));
  }

  /**
   * Deletes the new volume of a restore that failed (retrying a retryable failure), then its state
   * and its intent. When it cannot, the volume is left `error_restoring` and its intent kept, so
   * that recover() deletes it once it can; a `warning` (the delete's code, `details.volumeId`,
   * `details.backupId`) says so. Runs while the job still holds the backup's record (its claim not
   * yet released, or, when the intent could not be deleted after the commit, released), so a
   * recovery meanwhile leaves the intent alone: its reader is alive.
   */
  private async dropNewVolume(volume: Volume, backupId: string, jobId: string, flowStarted: boolean): Promise<void> {
    try {
      await retrying(() => unlessNotFound(this.volumes.deleteVolume(volume.id)));
    } catch (err) {
      const e = toCairnError(err, this.volumes.name);
      await this.cleanup(() => markErrorRestoring(this.catalog, volume.id, backupId));
      this.emit('warning', new CairnError(e.code, `restore of backup ${backupId} failed and its new volume ${volume.id} could not be deleted (${e.message}): it is left error_restoring, for recover() to delete`, { cause: err, details: { volumeId: volume.id, backupId } }));
      return;
    }
    // Gone: a crash from here leaves an intent with no volume, and a state of a volume that is
    // gone, both of which recovery clears.
    if (flowStarted) await this.cleanup(() => this.catalog.clearVolumeState(volume.id));
    await this.cleanup(() => this.catalog.deleteNewVolumeIntent(jobId));
  }

  /**
   * Runs `fn` on backup `backupId` under the protection a restore of it has, without restoring it
   * into a volume (an archive export reads it this way). `fn` gets the record as claimed and the
   * backup's service; it may read the backup through that service (`restore` into a device of its
   * own, a chunked repository's `vmConfig`, `verify`), and must neither change nor delete the backup
   * or its record. It must settle only once it has stopped reading: nothing protects a read that
   * outlives it. Resolves with what `fn` resolves with.
   *
   * Checked and claimed as a restore is (the same claim: startRestore): `NOT_FOUND` for an unknown
   * backup or target, `CONFLICT` unless the backup is `available` or `restoring` by readers that
   * name themselves (BackupRecord.readers: restores and reads here or in other processes),
   * `CANCELLED` (nothing claimed) when `signal` fires before the claim is taken, `INVALID_INPUT`
   * (`details.field` `signal`, nothing claimed) for a `signal` that is not an AbortSignal. While `fn` runs
   * the record is `restoring`, this manager among its readers, and stays:
   * `deleteBackup` of it here or in any process sharing the catalog is refused with `CONFLICT`
   * (`details.status` `restoring`), as during a restore, so a garbage collection keeps its data;
   * restores and other reads of it, by this manager or others, run at once; an incremental may
   * still build on it. When `fn` settles (resolves, rejects, or gives up on `signal`), the claim
   * goes, and the last claim of any reader that may be alive puts it back to `available` (a
   * failure of that write is a `warning`). `fn`'s failure is rethrown as a CairnError, `CANCELLED` once `signal` fired. A
   * process that dies while `fn` runs leaves its entry; `recover()` drops it, and puts the record
   * back to `available` when no other reader may be alive, as for a restore whose process died.
   */
  async readBackup<T>(backupId: string, fn: (backup: BackupRecord, service: BackupService) => Promise<T>, options: { signal?: AbortSignal } = {}): Promise<T> {
    const { signal } = options;
    // Checked before anything is claimed: a signal that is not one would fail the claim's section
    // after it had been queued for.
    assertSignal(signal);
    throwIfAborted(signal);
    // Held (live-records) from before the claim may write `restoring` until the release settled.
    const letGo = holdRecord(backupId);
    let releaseBackup: ReleaseClaim | undefined;
    try {
      let backup: BackupRecord;
      [backup, releaseBackup] = await this.claimRestore(backupId, signal);
      const service = this.target(backup.service);
      throwIfAborted(signal);
      return await fn(backup, service);
    } catch (err) {
      throw signal?.aborted && !(isCairnError(err) && err.code === 'CANCELLED') ? new CairnError('CANCELLED', `read of backup ${backupId} cancelled`, { cause: err }) : toCairnError(err);
    } finally {
      if (releaseBackup) await this.cleanup(() => releaseBackup!(() => this.endRestoring(backupId)));
      letGo();
    }
  }

  /**
   * The last restore (or read) of a backup by this manager ended: its entry leaves the record's
   * readers, and the backup is back to `available` when no reader that may be alive is left.
   * Re-read, so a deleted record stays deleted.
   */
  private async endRestoring(backupId: string): Promise<void> {
    const current = await unlessNotFound(this.catalog.getBackup(backupId));
    if (current?.status !== 'restoring') return;
    await settleGoneReaders(this.catalog, current);
    await this.catalog.putBackup(withoutReader(current, this.claims.readerId));
  }

  /**
   * Deletes a backup (Cinder semantics). `CONFLICT` (nothing changed; `details.backupId`,
   * `details.status`) when it is in a flow: `creating`, being restored, the parent of a backup
   * being created, or `deleting` — a delete in progress, whoever owns it: one whose process is
   * gone is resumed by `recover()` (which the CLI and API run), one whose owner cannot be judged
   * from here is `resetState` to `error` first. An `error_deleting` backup is deleted again (a
   * retry). On a target with dependent chains, `CONFLICT` when others depend on it and `cascade`
   * is not set (also when the service itself refuses: the record is then left as it was); `NOT_SUPPORTED` for `cascade` on a
   * dependent-chain target without cascade delete; a cascade deletes dependents first, newest
   * first. On a target without dependent chains (self-contained backups) dependents never block a
   * delete (unlike Cinder), they stay restorable with `parentId` naming the deleted backup, and
   * `cascade` changes nothing. Checks and the move to `deleting` are atomic with respect to
   * this manager's restores, backups and deletes of the backup, so of two deletes of one backup
   * at once one runs and the other is refused. Not idempotent: an id already gone is `NOT_FOUND`.
   */
  async deleteBackup(backupId: string, options: { cascade?: boolean } = {}): Promise<void> {
    // Held (live-records) from before the move to `deleting` until the delete's last write.
    const letGo = holdRecord(backupId);
    try {
      await this.deleteHeld(backupId, options);
    } finally {
      letGo();
    }
  }

  private async deleteHeld(backupId: string, options: { cascade?: boolean }): Promise<void> {
    // The section of a delete frees space: it may spend a store's space reserve (Catalog.section).
    const [backup, service] = await this.claims.exclusive(backupId, async () => {
      const backup = await this.catalog.getBackup(backupId);
      const restored = this.claims.count(backup.id, 'restore') > 0;
      if (IN_FLOW.has(backup.status) || restored) {
        const status = restored && backup.status === 'available' ? 'restoring' : backup.status;
        const why = status === 'deleting' ? ': a delete is in progress (recovery resumes one whose process is gone)' : '';
        throw new CairnError('CONFLICT', `backup ${backup.id} is ${status}${why}`, { details: { backupId: backup.id, status } });
      }
      const named = await this.catalog.listBackups({ volumeId: backup.volumeId, parentId: backup.id });
      // The dependents that refuse a plain delete: a child in `error` does not (its backup failed).
      const children = named.filter((c) => c.status !== 'error');
      // A child being created here (the claim) or by a process that may be alive (its record,
      // written in this backup's section when it claimed it: claimParent) builds on it.
      const building = children.find((c) => c.status === 'creating' && mayBeWorkedOn(c));
      if (this.claims.count(backup.id, 'parent') > 0 || building) {
        const why = building ? ` (${building.id}; if the process creating it is gone for good, reset that backup's state first)` : '';
        throw new CairnError('CONFLICT', `backup ${backup.id} is the parent of an incremental backup being created${why}`, {
          details: { backupId: backup.id, status: backup.status, ...(building ? { childId: building.id } : {}) },
        });
      }
      const service = this.target(backup.service);
      const caps = service.describe().capabilities;
      if (children.length > 0 && caps.dependentChains) {
        if (!options.cascade) throw new CairnError('CONFLICT', `backup ${backup.id} has ${children.length} dependent backup(s); delete them first or cascade`);
        if (!caps.cascadeDelete) throw new CairnError('NOT_SUPPORTED', `target ${service.name} cannot cascade deletes`);
      }
      // A cascade deletes every child first, newest first, those in `error` too: their records name
      // this backup, and what the target may still hold of them (a backup reset to error, one whose
      // cleanup failed) builds on it. Left behind, they would be records of a deleted parent, and
      // data that makes the target refuse this delete.
      if (options.cascade && caps.dependentChains) {
        for (const child of named.reverse()) await this.deleteBackup(child.id, options);
      }
      await this.catalog.putBackup({ ...backup, status: 'deleting', owner: currentOwner(), updatedAt: nowIso() });
      return [backup, service] as const;
    }, undefined, { freesSpace: true });
    await this.finishDelete(backup, service);
  }

  /**
   * Removes a backup's data then its record; on failure the record goes to `error_deleting`, except
   * for a `CONFLICT` refusal of the service (nothing deleted), which puts the record back as it was.
   * Holds the record (live-records) meanwhile, so a recovery of this process leaves it alone. The
   * data is deleted outside the record's section (others' sections need not wait for it), the
   * record in it. Not called in the record's section.
   */
  private async finishDelete(backup: BackupRecord, service: BackupService): Promise<void> {
    const letGo = holdRecord(backup.id);
    let refused = false;
    try {
      try {
        await service.delete(backup);
      } catch (err) {
        // A service refuses a delete with CONFLICT having deleted nothing (BackupService.delete:
        // others depend on it), so the record goes back as it was before the delete: its data is
        // whole. A resumed delete (`deleting` already) has no earlier status to go back to.
        refused = isCairnError(err) && err.code === 'CONFLICT' && backup.status !== 'deleting';
        throw err;
      }
      // Removed in the record's section, as every removal of a record is (BackupClaims): a
      // check-then-write of the record in a section (a reset's, in another process) then never
      // writes it back between its read and its write. The section of a delete frees space.
      await this.claims.exclusive(backup.id, () => this.catalog.deleteBackup(backup.id), undefined, { freesSpace: true });
    } catch (err) {
      const e = toCairnError(err);
      const back: BackupRecord = refused ? { ...backup, updatedAt: nowIso() } : { ...backup, status: 'error_deleting', failReason: `${e.code}: ${e.message}`, updatedAt: nowIso() };
      await this.catalog.putBackup(back);
      throw e;
    } finally {
      letGo();
    }
  }

  /**
   * Resolves what a crash left in flight, as Cinder's manager does at start. Idempotent. Records
   * someone may still be working on are left alone and listed in `skipped` (mayBeWorkedOn): those
   * a flow of this process holds (any manager's, from before the flow writes the record until its
   * last write of it), and those of another process that may be alive (on this host, or on another
   * host). So a long-running process may recover at any time: its running jobs are left alone,
   * while a record of its own that a job left in a flow status (its final write failed) is
   * recovered like a crashed process's. Records that a previous process with the same pid left
   * behind differ in start time and are recovered. A record of an owner that is gone for good but
   * cannot be judged from here (another host, another pid namespace) stays until `resetState`.
   */
  async recover(): Promise<RecoveryReport> {
    return recoverInFlight({
      catalog: this.catalog,
      volumes: this.volumes,
      isLive: (b) => mayBeWorkedOn(b),
      section: (id, fn, options) => this.claims.exclusive(id, fn, undefined, options),
      canFinishDelete: (b) => Object.hasOwn(this.targets, b.service),
      finishDelete: (b) => this.finishDelete(b, this.target(b.service)),
    });
  }

  /**
   * Cinder's backup-reset-state, an administrator's override for a record stuck in a flow status
   * whose owner is gone for good (a machine that will not come back, a removed container: recovery
   * leaves those alone, as such an owner may be alive) or for one in a status to correct. The
   * caller asserts that whoever worked on the record is gone.
   *
   * Refused with `CONFLICT` (nothing changed) while a flow of this process holds the record or
   * uses it (a running job: cancel it), and while the record is in a flow status and its owner is
   * a process on this host, in this pid namespace, that is alive (`ownerLocation` is `here` and
   * `ownerMayBeAlive`: a job running there; cancel it there); for a `restoring` record with
   * `readers`, any of its readers (its `owner` is SHARED_READERS_OWNER when there are several). `NOT_FOUND` for an unknown backup,
   * `INVALID_INPUT` for a status other than `available` and `error`.
   *
   * Otherwise resolves the record as recover() resolves an abandoned one, whatever its owner:
   * `creating` → `error`, `restoring` → `available`, with the volume state its flow left settled
   * (`backing-up` cleared, `restoring-backup` → `error_restoring`) and its temporary snapshot
   * deleted. A `deleting` record is not resumed: its data may be partly gone, and `backup delete`
   * of the reset record deletes it. Then sets `status`:
   * - `error`: always (from any status, `deleting` and `error_deleting` included); `failReason`
   *   says it was reset, unless the record was already `error` (kept as it was).
   * - `available`: only once the target's `verify` finds the backup's data complete and sound
   *   (even of a record that was `restoring` or `available`). When it does not, the record is left
   *   `error` (`failReason` the first problem) and the call rejects with that problem's code
   *   (`CORRUPT` or `NOT_FOUND`), `details.problems` listing them. A verify that cannot run
   *   (`UNAVAILABLE`, `CANCELLED` through `options.signal`) rejects with its error, the record left
   *   as resolved above.
   * `options.progress` gets the verify's progress. Resolves with the record as written. The record
   * is re-read before the final write: `CONFLICT` when it changed meanwhile (another process).
   * Idempotent.
   */
  async resetState(backupId: string, status: 'available' | 'error', options: VerifyOptions = {}): Promise<BackupRecord> {
    const deps = { catalog: this.catalog, volumes: this.volumes, claims: this.claims, target: (name: string) => this.target(name), warn: (w: CairnError) => this.emit('warning', w) };
    return resetBackupState(deps, backupId, status, options);
  }

  async getBackup(backupId: string): Promise<BackupRecord> {
    return this.catalog.getBackup(backupId);
  }

  /**
   * Backups, oldest first (by `createdAt`): all, or those of volume `filter.volumeId` and/or in
   * status `filter.status` (Cinder's `volume_id` and `status` filters). `INVALID_INPUT`
   * (`details.field`) for a status that is not a BackupStatus.
   */
  async listBackups(filter: { volumeId?: string; status?: BackupStatus } = {}): Promise<BackupRecord[]> {
    const { volumeId, status } = filter;
    checkStatus(status);
    return this.catalog.listBackups({ ...(volumeId !== undefined ? { volumeId } : {}), ...(status !== undefined ? { status } : {}) });
  }

  /**
   * One page of backups (Catalog.listBackupPage: Cinder's `limit`, `marker`, `sort` and `name`),
   * filtered as listBackups is, with its `INVALID_INPUT` for a status that is not a BackupStatus.
   */
  async listBackupPage(query: Pick<BackupPageQuery, 'volumeId' | 'status' | 'name' | 'sort' | 'marker' | 'limit'> = {}): Promise<BackupPage> {
    checkStatus(query.status);
    return this.catalog.listBackupPage(query);
  }

  /** Backups whose parent is `backupId` (libvirt's children listing). `NOT_FOUND` if unknown. */
  async children(backupId: string): Promise<BackupRecord[]> {
    await this.catalog.getBackup(backupId);
    return this.catalog.listBackups({ parentId: backupId });
  }

  /**
   * The driver's view of a volume with the manager's flow state laid over it; a `restoring-backup`
   * state whose restore's reader is gone shows as the `error_restoring` recovery makes of it, and a
   * `backing-up` state whose backup's flow is over (its final clear of the state failed, or its
   * process died) is not shown, as recovery clears it (judgedVolumeState). A restore's new volume
   * in no flow state yet (its job waits for the volume's lock or attach) shows `restoring-backup`
   * while its intent is recorded, or `error_restoring` once that restore can no longer run
   * (intentVolumeStatus): never `available` before it holds the backup.
   */
  async getVolume(volumeId: string): Promise<VolumeView> {
    return volumeView(this.catalog, await this.volumes.getVolume(volumeId));
  }

  /**
   * Every volume of the driver (its listVolumes, in its order) as getVolume shows it, judged by
   * the same rules from one listing of the catalog's flow states and one of its new-volume
   * intents (volume-views.ts): the catalog reads do not grow with the volumes, only with the
   * backups that live flow states and intents name (each record read once). A volume deleted
   * while it is listed is either in the list or not, never a `NOT_FOUND`.
   */
  async listVolumes(): Promise<VolumeView[]> {
    return listVolumeViews(this.catalog, this.volumes);
  }

  /**
   * Deletes a volume (Cinder's volume delete). `NOT_FOUND` for an unknown volume. `CONFLICT`
   * (`details: {volumeId, volumeStatus}`) while a backup or restore works on it (`backing-up` of a
   * backup whose flow is not over: judgedVolumeState,
   * `restoring-backup`, which the new volume of a running restore is from its creation);
   * otherwise the driver's delete, `BUSY` while the volume is attached or has
   * snapshots (nothing deleted). A volume a failed restore left `error_restoring` is deleted too,
   * as in Cinder (its content is neither the old nor the backup's), and its flow state with it:
   * both in the section of the backup that state names, where a restore takes such a volume over,
   * so of a delete and a restore begun at once, in any processes sharing the catalog, one goes on
   * and the other is `CONFLICT` (as is a delete that finds the state changed there). The volume's
   * checkpoints go with it (the driver's); new-volume intents are left to recover()
   * (delete-volume.ts says why). `options.signal` ends a wait for the section with `CANCELLED`;
   * one that is not an AbortSignal is `INVALID_INPUT` (`details.field` `signal`), nothing deleted.
   * Not idempotent: a volume already gone is `NOT_FOUND`, unless the driver finishes, or has
   * finished in this process, a deletion of it killed midway (delete-volume.ts: retriedDelete).
   */
  async deleteVolume(volumeId: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    assertSignal(options.signal);
    const section = <T>(backupId: string, fn: () => Promise<T>) => this.claims.exclusive(backupId, fn, options.signal);
    return deleteVolume({ catalog: this.catalog, volumes: this.volumes, section }, volumeId);
  }

  /**
   * Reads and checks every chunk of one backup, or of every backup in every target (their reports
   * merged). `NOT_FOUND` for an unknown backup. One backup is checked only when its record says
   * its data is complete, `available` or `restoring`; any other status is refused with `CONFLICT`
   * before anything is read (`details.backupId`, `details.status`): `creating` and `deleting`
   * (data being written or removed), `error` and `error_deleting` (data missing or partial).
   * `resetState(id, 'available')` is what checks an `error` backup's data. `options.signal` stops
   * it (CANCELLED); `options.progress` gets the logical bytes checked and to check, summed over
   * the targets. A backup deleted while it is verified (its record gone, `deleting` or
   * `error_deleting` once the verify is done) is not reported broken: verify(backupId) rejects as
   * for an unknown backup (`NOT_FOUND`) or one being deleted (`CONFLICT`), and a verify of every
   * backup leaves it out of `checked` and `problems` (verify-backups.ts). A verify of every backup
   * also reports `NOT_FOUND` each `available` or `restoring` record whose target holds no data of
   * it (deleted behind the catalog's back).
   */
  async verify(backupId?: string, options: VerifyOptions = {}): Promise<VerifyReport> {
    if (backupId === undefined) return verifyAll(this.catalog, Object.values(this.targets), options);
    const backup = await this.catalog.getBackup(backupId);
    assertVerifiable(backup);
    return verifyOne(this.catalog, this.target(backup.service), backup, options);
  }

  /** Cinder's export_record: the record alone, for a deployment that reaches the same storage. */
  async exportRecord(backupId: string): Promise<{ service: string; record: string }> {
    const backup = await this.catalog.getBackup(backupId);
    if (backup.status !== 'available') throw new CairnError('CONFLICT', `backup ${backup.id} is ${backup.status}, not available`);
    return { service: backup.service, record: await this.target(backup.service).exportRecord(backup) };
  }

  /**
   * Cinder's import_record. The target's stored data describes the backup (BackupService.importRecord):
   * a document that disagrees with it is refused with `INVALID_INPUT`, nothing recorded, and so is
   * one whose name or description breaks the rules of backup()'s (`details.field`).
   * `ALREADY_EXISTS` when the id is already known here (checked atomically). `NOT_FOUND` when the
   * backup's manifest is gone, also when a delete of the backup in this catalog removed it between
   * the check and the write of the record: the manifest is checked again once the record is written
   * (for presence only, through BackupService.assertStored where the target has it), and a record
   * whose manifest is gone is removed (importedDataGone). The data the manifest names is not read:
   * verify checks it.
   */
  async importRecord(service: string, exported: string): Promise<BackupRecord> {
    const target = this.target(service);
    const record = await target.importRecord(exported);
    // The labels are the document's: held to the rules backup() holds a caller's to.
    assertStoredName(record.name, 'name');
    assertDescription(record.description, 'description');
    const imported = { ...record, service, status: 'available' as const, updatedAt: nowIso() };
    await this.catalog.putBackup(imported, { ifAbsent: true });
    // A delete removes the data before the record, so once this write (ifAbsent) has succeeded
    // any delete of the backup that ran since the check is over, and a second check sees it. It
    // asks only whether the data is there (assertStored), where the target can say so.
    const recheck = target.assertStored ? target.assertStored(imported) : target.importRecord(exported);
    const gone = await recheck.then(
      () => undefined,
      (err: unknown) => (isCairnError(err) && err.code === 'NOT_FOUND' ? err : undefined),
    );
    if (gone) {
      await this.importedDataGone(imported);
      throw gone;
    }
    return imported;
  }

  /**
   * Removes the record importRecord wrote when its data has gone meanwhile: only while it is that
   * record still (`available`, as written), in the backup's section. Anything since (a delete of
   * it, a restore's claim) leaves it to that flow.
   */
  private async importedDataGone(imported: BackupRecord): Promise<void> {
    await this.claims.exclusive(imported.id, async () => {
      const now = await unlessNotFound(this.catalog.getBackup(imported.id));
      if (now?.status === 'available' && now.updatedAt === imported.updatedAt && this.claims.count(imported.id, 'restore') === 0) await this.catalog.deleteBackup(imported.id);
    });
  }

  /** Cancels a running job. `NOT_FOUND` when no such job runs. */
  cancel(jobId: string, reason?: string): void {
    const job = this.jobs.get(jobId);
    if (!job) throw new CairnError('NOT_FOUND', `no running job ${jobId}`);
    job.cancel(reason);
  }

  listJobs(): Job[] {
    return [...this.jobs.values()];
  }

  private track(job: Job): void {
    this.jobs.set(job.id, job);
    job.done.then(
      () => this.jobs.delete(job.id),
      () => this.jobs.delete(job.id),
    );
  }

  private progressSink(id: string, phase: ProgressEvent['phase'], state: { bytesDone: number; bytesTotal: number }) {
    return (done: number, total: number) => {
      state.bytesDone = Math.max(state.bytesDone, done);
      state.bytesTotal = total;
      this.emit('progress', { id, phase, bytesDone: state.bytesDone, bytesTotal: total });
    };
  }

  private target(name?: string): BackupService {
    const key = name ?? this.defaultTarget;
    // An own key only: `constructor` or `__proto__` must not find Object.prototype's members.
    const service = Object.hasOwn(this.targets, key) ? this.targets[key] : undefined;
    if (!service) throw new CairnError('NOT_FOUND', `backup target ${key} is not configured`);
    return service;
  }

  /**
   * The newest backup of the volume in the target that an incremental may build on: one whose data
   * is complete, `available` or `restoring` (a restore only reads it). Undefined when there is none.
   */
  private async latestParent(volumeId: string, service: string): Promise<BackupRecord | undefined> {
    const found = await Promise.all([...PARENT_STATUSES].map((status) => this.catalog.latestBackup({ volumeId, status, service })));
    return found.filter((b) => b !== undefined).sort(byCreation).at(-1);
  }

  /** Runs a cleanup step; a failure there never hides the flow's own outcome. */
  private async cleanup(step: () => Promise<unknown>): Promise<void> {
    try {
      await step();
    } catch (err) {
      this.emit('warning', toCairnError(err));
    }
  }
}

/** A restore's new volume, created by startRestore once the backup was claimed and the intent recorded. */
interface NewVolume {
  volume: Volume;
  /** The backup as claimed (`restoring`). */
  backup: BackupRecord;
  /** The restore claim on the backup, released when the job ends. */
  release: ReleaseClaim;
  /** The job's hold of the backup's record (live-records). */
  letGo: LetGo;
  /** The restore job's id, the key of its NewVolumeIntent. */
  jobId: string;
}

/** Delays before the retries of a cleanup step that failed with a retryable code (`BUSY`, `UNAVAILABLE`). */
const CLEANUP_RETRY_MS = [50, 200, 800];

/** Runs `step`, retrying it after CLEANUP_RETRY_MS while it fails with a retryable code; else its error. */
const retrying = <T>(step: () => Promise<T>): Promise<T> => withRetries(step, CLEANUP_RETRY_MS, isRetryable);

/** Statuses of a record an incremental may build on: its data is complete, and a restore only reads it. */
const PARENT_STATUSES: ReadonlySet<BackupRecord['status']> = new Set(['available', 'restoring']);

/** Throws the job's `CANCELLED` once its signal has fired. */
function throwIfCancelled(signal: AbortSignal): void {
  if (signal.aborted) throw cancelledError(signal, { message: 'cancelled', keep: 'any' });
}

/** `INVALID_INPUT` (`details.field: 'status'`) unless `status` is undefined or a BackupStatus. */
function checkStatus(status: BackupStatus | undefined): void {
  if (status !== undefined && !BACKUP_STATUSES.includes(status)) {
    throw new CairnError('INVALID_INPUT', `status must be one of ${BACKUP_STATUSES.join(', ')}, not ${JSON.stringify(status)}`, { details: { field: 'status' } });
  }
}
