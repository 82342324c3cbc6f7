import { CairnError, isCairnError, newId, ordinal, toCairnError, type Job, type JobQueuePlace } from '@cairn/core';
import { errorJson } from './errors.js';

export type ApiJobKind = 'backup' | 'restore' | 'verify' | 'gc' | 'reset-state';
/** `running` → `succeeded` | `failed` | `cancelled`; an ended job never changes again. */
export type ApiJobState = 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobProgress {
  /** Logical bytes done so far (monotonic). */
  bytesDone: number;
  /** Logical bytes the job will process in all (0 while unknown). */
  bytesTotal: number;
}

/** What the table needs to follow one job, whoever runs it (the manager, or the API for verify, gc and reset-state). */
export interface JobSpec {
  id: string;
  kind: ApiJobKind;
  backupId?: string;
  volumeId?: string;
  target?: string;
  progress(): JobProgress;
  /** Asks the job to stop; it ends `cancelled` once it has cleaned up. Idempotent. */
  cancel(reason: string): void;
  /**
   * Settles once the job has stopped: with its result, plus an error when the result is not a
   * success (a verify that found problems); rejects when the job failed or was cancelled.
   */
  outcome: Promise<{ result: unknown; error?: unknown }>;
  /**
   * While a manager's job waits before it runs (Job.queued: behind another flow of its volume, or
   * for a place among the server's backups and restores, `--max-data-jobs`), what for and its
   * place in that line (1: it is the next); undefined once it runs, and for jobs that never wait.
   */
  queued?(): JobQueuePlace | undefined;
}

/** The JSON view of a job (docs/api.md, "Job"). */
export interface JobView {
  id: string;
  kind: ApiJobKind;
  state: ApiJobState;
  /**
   * Present (true), with `queuedFor` and `queuePosition`, while a `running` backup or restore waits
   * before it runs: for a place (`data-jobs`: `--max-data-jobs`), or behind another backup or
   * restore of its volume (`volume`).
   */
  queued?: true;
  queuedFor?: JobQueuePlace['waitsFor'];
  queuePosition?: number;
  backupId?: string;
  volumeId?: string;
  target?: string;
  progress: JobProgress;
  cancelRequested: boolean;
  startedAt: string;
  endedAt?: string;
  result?: unknown;
  error?: ReturnType<typeof errorJson>;
}

class Entry {
  state: ApiJobState = 'running';
  cancelRequested = false;
  readonly startedAt = new Date().toISOString();
  endedAt?: string;
  result?: unknown;
  error?: CairnError;
  finalProgress?: JobProgress;
  /** Resolves (never rejects) once the job has ended and the entry holds its outcome. */
  readonly settled: Promise<void>;
  /**
   * Wake-ups of the `until` calls still waiting. Each is removed when it fires, at its timeout
   * or at the job's end: a job long-polled for hours holds nothing per poll that has returned
   * (racing `settled` against a timer left one reaction on `settled` per poll until the job ended).
   */
  private readonly waiters = new Set<() => void>();

  /** `maintenance`: counts against the table's maxMaintenance while it runs. */
  constructor(
    readonly spec: JobSpec,
    onEnd: (e: Entry) => void,
    readonly maintenance = false,
  ) {
    this.settled = spec.outcome.then(
      ({ result, error }) => this.end(error === undefined ? 'succeeded' : 'failed', result, error),
      (err: unknown) => this.end(isCairnError(err) && err.code === 'CANCELLED' ? 'cancelled' : 'failed', undefined, err),
    ).then(() => onEnd(this));
  }

  private end(state: ApiJobState, result: unknown, error: unknown): void {
    this.finalProgress = this.spec.progress();
    this.state = state;
    this.result = result;
    this.error = error === undefined ? undefined : toCairnError(error);
    this.endedAt = new Date().toISOString();
    for (const wake of [...this.waiters]) wake();
  }

  /**
   * Resolves once the job has ended (at once if it has), after `ms`, or once `signal` aborts (the
   * client went away), whichever comes first. Never rejects.
   */
  until(ms: number, signal?: AbortSignal): Promise<void> {
    if (this.state !== 'running' || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', wake);
        this.waiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      signal?.addEventListener('abort', wake, { once: true });
      this.waiters.add(wake);
    });
  }

  view(): JobView {
    const { id, kind, backupId, volumeId, target } = this.spec;
    const place = this.state === 'running' ? this.spec.queued?.() : undefined;
    return {
      id,
      kind,
      state: this.state,
      queued: place === undefined ? undefined : true,
      queuedFor: place?.waitsFor,
      queuePosition: place?.position,
      backupId,
      volumeId,
      target,
      progress: this.finalProgress ?? this.spec.progress(),
      cancelRequested: this.cancelRequested,
      startedAt: this.startedAt,
      endedAt: this.endedAt,
      result: this.result,
      error: this.error && errorJson(this.error),
    };
  }
}

/**
 * Kinds of job that read a whole repository or backup to check or sweep it, of which a server runs
 * at most `maxMaintenance` at once, with the starts passed `maintenance` (a reset-state to
 * `available`, which verifies the backup).
 */
export const MAINTENANCE_KINDS: ReadonlySet<ApiJobKind> = new Set(['verify', 'gc']);
/** Default `maxMaintenance` (`cairn serve --max-maintenance-jobs`). */
export const DEFAULT_MAX_MAINTENANCE_JOBS = 2;
/** Default `cairn serve --max-data-jobs`: the manager's `maxDataJobs` (backups and restores run at once). */
export const DEFAULT_MAX_DATA_JOBS = 4;

/** Default `maxEnded` (`cairn serve --keep-jobs`). */
export const DEFAULT_KEEP_JOBS = 100;
/** Default `maxEndedBytes` (`cairn serve --keep-jobs-bytes`). */
export const DEFAULT_KEEP_JOBS_BYTES = 16 * 1024 * 1024;

/**
 * The jobs this server started (backups, restores, verifies), running and recently ended. Ended
 * jobs are kept so clients can read the outcome, the newest first, up to two bounds: at most
 * `maxEnded` of them, and at most `maxEndedBytes` of them measured as their views' JSON (a job's
 * result can be large: a verify report listing many problems). Older ones are forgotten (then
 * `NOT_FOUND`; the backup record still tells a backup's outcome). The job that ended last is
 * kept whatever its size, so that its client can read it: the kept views take at most
 * `maxEndedBytes` plus that one.
 */
export class JobTable {
  private readonly entries = new Map<string, Entry>();
  /** Ended jobs oldest first, with the size of each one's view (JSON bytes), and their sum. */
  private readonly ended: { id: string; bytes: number }[] = [];
  private endedBytes = 0;
  private closing = false;
  /**
   * Starts in flight (see `start`): each settles (never rejects) once its job was added or its
   * start failed; its controller, aborted at shutdown, is dropped with it (one per start, never a
   * signal shared by every job, which would collect a listener per job for the server's lifetime).
   * `maintenance`: the start counts against `maxMaintenance`.
   */
  private readonly starting = new Map<Promise<void>, { controller: AbortController; maintenance: boolean }>();

  /**
   * `maxEnded`: ended jobs kept. `onIdle`: called each time the last running job ends (the
   * server releases memory kept for reuse once it stays idle). `maxMaintenance`: the most jobs of
   * MAINTENANCE_KINDS running (or being started) at once; default DEFAULT_MAX_MAINTENANCE_JOBS.
   * `maxEndedBytes`: the most bytes of ended jobs' views kept (see the class).
   */
  constructor(
    private readonly maxEnded = DEFAULT_KEEP_JOBS,
    private readonly onIdle?: () => void,
    private readonly maxMaintenance = DEFAULT_MAX_MAINTENANCE_JOBS,
    private readonly maxEndedBytes = DEFAULT_KEEP_JOBS_BYTES,
  ) {}

  /** Follows a started job and returns its view. After `shutdown` began, the job is cancelled at once. */
  add(spec: JobSpec): JobView {
    return this.follow(spec, false).view();
  }

  /** `maintenance`: the job counts against `maxMaintenance` (those of MAINTENANCE_KINDS always do). */
  private follow(spec: JobSpec, maintenance: boolean): Entry {
    const entry = new Entry(spec, (e) => this.onEnd(e), maintenance || MAINTENANCE_KINDS.has(spec.kind));
    this.entries.set(spec.id, entry);
    if (this.closing) this.requestCancel(entry, 'the server is shutting down');
    return entry;
  }

  /**
   * Starts a job through `begin` and follows it (`add`). While `begin` runs the start is in flight:
   * `settled` (so shutdown) waits for it, so that a job added once shutdown has begun is cancelled
   * and waited for too, never left running after shutdown resolved. `begin` gets a signal that
   * shutdown aborts with CANCELLED, for the validation and waits of a start (the manager's
   * startBackup/startRestore take it, and link their job to it). Rejects as `begin` does, adding nothing.
   * Resolves with the job's view; a manager's job (one with `queued`) once it shows its first
   * wait, so that the view says whether it waits in a line (`queued`) and for what.
   *
   * With `maintenance` (a verify, a gc, a reset-state to `available`), refused with `BUSY` before `begin` is called (nothing is
   * started; `details: {running, limit}`) while `maxMaintenance` such jobs run or are being
   * started: each reads a whole repository or backup, and a client must not start any number.
   */
  async start(begin: (signal: AbortSignal) => Promise<JobSpec>, options: { maintenance?: boolean } = {}): Promise<JobView> {
    const maintenance = options.maintenance === true;
    if (maintenance) {
      const running = this.maintenanceJobs();
      if (running >= this.maxMaintenance) {
        throw new CairnError('BUSY', `${running} verify, gc or reset-state (to available) job(s) are running, the most this server runs at once: retry once one has ended`, {
          details: { running, limit: this.maxMaintenance },
        });
      }
    }
    const controller = new AbortController();
    if (this.closing) controller.abort(new CairnError('CANCELLED', 'the server is shutting down'));
    const begun = begin(controller.signal);
    const pending = begun.then(
      () => {},
      () => {},
    );
    this.starting.set(pending, { controller, maintenance });
    let entry: Entry;
    try {
      entry = this.follow(await begun, maintenance);
    } finally {
      this.starting.delete(pending);
    }
    // A manager's job comes to its first wait (its volume, or a place among the data jobs) within
    // microtasks of its start, seen once the event loop has turned (core's Job.queued): the view
    // returned (the 202) then says whether it waits (`queued`, `queuedFor`, `queuePosition`).
    if (entry.spec.queued) await new Promise<void>((resolve) => setImmediate(resolve));
    return entry.view();
  }

  /** The view of job `id`. `NOT_FOUND` for an unknown or forgotten job. */
  get(id: string): JobView {
    return this.entry(id).view();
  }

  /** Jobs oldest first, optionally only of one state or kind. */
  list(filter: { state?: ApiJobState; kind?: ApiJobKind } = {}): JobView[] {
    return [...this.entries.values()]
      .filter((e) => (filter.state === undefined || e.state === filter.state) && (filter.kind === undefined || e.spec.kind === filter.kind))
      .map((e) => e.view())
      .sort((a, b) => ordinal(a.startedAt, b.startedAt));
  }

  /** Maintenance jobs running (MAINTENANCE_KINDS, and those started with `maintenance`), and maintenance starts in flight. */
  private maintenanceJobs(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.state === 'running' && e.maintenance) n++;
    for (const s of this.starting.values()) if (s.maintenance) n++;
    return n;
  }

  /** Jobs still running (those waiting for a place included). */
  get running(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.state === 'running') n++;
    return n;
  }

  /** Running jobs that wait before they run: for a place among the backups and restores, or behind another flow of their volume (JobSpec.queued). */
  get queued(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.state === 'running' && e.spec.queued?.() !== undefined) n++;
    return n;
  }

  /**
   * Asks running job `id` to stop and returns its view (still `running` until it has cleaned up;
   * then `cancelled`). `NOT_FOUND` for an unknown job, `CONFLICT` for one that already ended.
   */
  cancel(id: string, reason = 'cancelled through the API'): JobView {
    const entry = this.entry(id);
    if (entry.state !== 'running') throw new CairnError('CONFLICT', `job ${id} already ended (${entry.state})`, { details: { state: entry.state } });
    this.requestCancel(entry, reason);
    return entry.view();
  }

  /**
   * Waits up to `ms` for job `id` to end, then returns its view (ended or not). `NOT_FOUND` if
   * unknown. `signal` (the poll's client went away) ends the wait at once. A wait that returns
   * keeps nothing alive: a running job polled any number of times holds memory only for the waits
   * in progress, and a wait whose client has gone is no longer in progress.
   */
  async wait(id: string, ms: number, signal?: AbortSignal): Promise<JobView> {
    const entry = this.entry(id);
    if (ms > 0) await entry.until(ms, signal);
    return entry.view();
  }

  /**
   * Cancels every running job (and any job added from now on) and resolves once all have ended.
   * Core guarantees a cancelled job leaves nothing half-written: records end in `error` with
   * CANCELLED, temporaries and locks are released.
   */
  async shutdown(reason = 'the server is shutting down'): Promise<void> {
    this.closing = true;
    for (const s of this.starting.values()) s.controller.abort(new CairnError('CANCELLED', reason));
    for (const e of this.entries.values()) if (e.state === 'running') this.requestCancel(e, reason);
    await this.settled();
  }

  /** Resolves once no job runs and no start is in flight (jobs added meanwhile included). */
  async settled(): Promise<void> {
    for (;;) {
      const running = [...this.entries.values()].filter((e) => e.state === 'running');
      if (running.length === 0 && this.starting.size === 0) return;
      await Promise.all([...running.map((e) => e.settled), ...this.starting.keys()]);
    }
  }

  private requestCancel(entry: Entry, reason: string): void {
    entry.cancelRequested = true;
    entry.spec.cancel(reason);
  }

  private entry(id: string): Entry {
    const entry = this.entries.get(id);
    if (!entry) throw new CairnError('NOT_FOUND', `no job ${id}`);
    return entry;
  }

  /** Keeps `entry`, which has just ended, and forgets the oldest ended jobs over either bound. */
  private onEnd(entry: Entry): void {
    // An ended job's view never changes again (an ended job cannot be cancelled), so it is measured once.
    const bytes = jsonBytes(entry.view());
    this.ended.push({ id: entry.spec.id, bytes });
    this.endedBytes += bytes;
    while (this.ended.length > this.maxEnded || (this.endedBytes > this.maxEndedBytes && this.ended.length > 1)) {
      const oldest = this.ended.shift()!;
      this.endedBytes -= oldest.bytes;
      this.entries.delete(oldest.id);
    }
    if (this.running === 0) this.onIdle?.();
  }
}

/** Size of `value` as the API sends it (UTF-8 JSON); 0 for one JSON.stringify refuses (a cycle, a BigInt: it cannot be sent either). */
function jsonBytes(value: unknown): number {
  try {
    return Buffer.byteLength(JSON.stringify(value) ?? '');
  } catch {
    return 0;
  }
}

/**
 * A manager job (backup or restore) as a JobSpec. `finish` turns the final record into the
 * job's result view; it must not reject once the job succeeded (a rejection would report the job
 * failed): a restore's reads the restored volume again and reports a failed read in the result
 * (restoreResult). The job's `queued` (what it waits for before it runs, and its place) is the
 * manager's (Job.queued).
 */
export function managerJob(job: Job, target: string | undefined, finish: (record: Awaited<Job['done']>) => Promise<unknown>): JobSpec {
  return {
    queued: () => job.queued?.(),
    id: job.id,
    kind: job.kind,
    backupId: job.backupId,
    volumeId: job.volumeId,
    target,
    progress: () => job.progress(),
    cancel: (reason) => job.cancel(reason),
    outcome: job.done.then(async (record) => ({ result: await finish(record) })),
  };
}

/**
 * Work the API runs itself as a job (verify, gc, reset-state): `work` gets an AbortSignal that
 * `cancel` fires and a sink for its progress while it runs; the `progress` it resolves with, if
 * any, is the job's final one. The work's outcome is the job's: work rejects with CANCELLED once
 * a cancel stopped it, and resolves only having done everything (the targets' verify and gc, by
 * their contracts; reset-state past its commit point), so a cancel that came too late to stop it
 * is not reported as having stopped it.
 */
export function apiJob(
  fields: { kind: ApiJobKind; backupId?: string; volumeId?: string; target?: string },
  work: (signal: AbortSignal, report: (bytesDone: number, bytesTotal: number) => void) => Promise<{ result: unknown; error?: unknown; progress?: JobProgress }>,
): JobSpec {
  const controller = new AbortController();
  let progress: JobProgress = { bytesDone: 0, bytesTotal: 0 };
  return {
    ...fields,
    id: newId(),
    progress: () => ({ ...progress }),
    cancel: (reason) => controller.abort(new CairnError('CANCELLED', reason)),
    outcome: work(controller.signal, (bytesDone, bytesTotal) => (progress = { bytesDone, bytesTotal })).then((done) => {
      if (done.progress) progress = done.progress;
      return { result: done.result, error: done.error };
    }),
  };
}
