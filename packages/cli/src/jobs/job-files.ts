import { access, constants, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { CairnError, currentOwner, escapedText, makeDirectories, ordinal, toCairnError, writeFileAtomic, type ProcessOwner } from '@cairn/core';
import { jobProcessState, looksLikeCairn, type JobProcessState } from './process-identity.js';

/** What a running command records about its job in `<stateDir>/jobs/<id>.json`. */
export interface JobFile {
  id: string;
  kind: 'backup' | 'restore';
  pid: number;
  backupId: string;
  volumeId: string;
  startedAt: string;
  /**
   * The kernel's start time of `pid` (`/proc/<pid>/stat` field 22, clock ticks since boot): with
   * `pid` it names the process, so a reused pid is not taken for the job's. Absent in records
   * written before it was kept (or where /proc is unavailable).
   */
  pidStartTime?: number;
  /**
   * Where `pid` runs: core's `ProcessOwner` fields of the process. Absent in records written
   * before they were kept (taken for this host's, judged by pid and start time) and, for
   * `bootId` and `pidNamespace`, where /proc is unavailable, and `machineId` where no machine id
   * can be read.
   */
  host?: string;
  bootId?: string;
  pidNamespace?: number;
  machineId?: string;
}

/** A listed job: the record without where it runs (`host`, `bootId`, `pidNamespace`, `machineId`). */
export interface JobListing extends Omit<JobFile, 'host' | 'bootId' | 'pidNamespace' | 'machineId'> {
  /**
   * False when the recorded process no longer runs or its pid now names another process (the
   * file is stale); true when it runs, and for a job `elsewhere` (it may be running).
   */
  alive: boolean;
  /** Why: `alive`, `gone` (exited), `reused` (the pid names another process), `elsewhere` (another host, machine or pid namespace). */
  state: JobProcessState;
}

/** The process a job record names. */
function jobOwner(doc: JobFile): ProcessOwner {
  return { host: doc.host ?? hostname(), pid: doc.pid, startTime: doc.pidStartTime, bootId: doc.bootId, pidNamespace: doc.pidNamespace, machineId: doc.machineId };
}

const jobsDir = (stateDir: string) => join(stateDir, 'jobs');

/**
 * `UNAVAILABLE` (details.file, as for a jobs directory that cannot be read) when `cause` says the
 * jobs directory `dir` cannot exist because a file is there or on the way to it (ENOTDIR; EEXIST
 * from a mkdir: the level is a file), so the config's `stateDir` is wrong: saying so, not the
 * system's bare message (`EEXIST: file already exists`) nor a guess at another user's job.
 * `undefined` for any other cause.
 */
function notADirectory(dir: string, cause: unknown): CairnError | undefined {
  const err = cause as NodeJS.ErrnoException;
  if (err?.code !== 'ENOTDIR' && !(err?.code === 'EEXIST' && err.syscall === 'mkdir')) return undefined;
  const message = `the jobs directory ${dir} cannot exist: a file is there or on the way to it (stateDir in the config names the state directory; it must be a directory)`;
  return new CairnError('UNAVAILABLE', message, { cause, details: { file: dir } });
}
const ID = /^[A-Za-z0-9-]{1,64}$/;

/**
 * Makes the jobs directory `dir` (and its missing parents) if it is missing: the jobs directory
 * itself with mode 0700 (owner only, whatever the umask), so that where the state directory is
 * shared or group-writable nobody else can plant, replace or remove records in it. An existing
 * directory is taken as it is (its mode is the administrator's choice).
 */
async function makeJobsDirectory(dir: string): Promise<void> {
  await makeDirectories(dirname(dir));
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !(await stat(dir).catch(() => undefined))?.isDirectory()) throw err;
  }
}

/**
 * Checks, before a job starts, that its record will have a place: makes the jobs directory of
 * `stateDir` when missing (as registerJob does) and checks that this process may create files in
 * it. So a command whose jobs cannot be recorded fails before its flow starts, writing nothing to
 * the repository (no backup record left `error` by the cancellation runJob would have to make).
 * `UNAVAILABLE` with details.file the jobs directory, saying so when a file is in the way
 * (notADirectory). Writing the record itself can still fail later (a full disk): runJob handles that.
 */
export async function prepareJobsDirectory(stateDir: string): Promise<void> {
  const dir = jobsDir(stateDir);
  try {
    await makeJobsDirectory(dir);
    await access(dir, constants.W_OK | constants.X_OK);
  } catch (cause) {
    throw notADirectory(dir, cause) ?? new CairnError('UNAVAILABLE', `cannot record jobs in ${dir}: ${(cause as Error).message}`, { cause, details: { file: dir } });
  }
}

/**
 * Records a job of this process; returns the function that removes the record (idempotent).
 * The record is written with core's writeFileAtomic: an unpredictable temporary name created
 * exclusively (O_EXCL, mode 0600: never through a link planted by someone else), fsynced and
 * renamed into place, so the record (mode 0600) is whole or absent, and durable once this
 * resolves. The jobs directory is made 0700 when missing (see makeJobsDirectory).
 * `UNAVAILABLE` when the record cannot be written (nothing is left behind then), saying so when
 * the jobs directory cannot exist because a file is there or on the way (notADirectory).
 */
export async function registerJob(stateDir: string, job: Pick<JobFile, 'id' | 'kind' | 'backupId' | 'volumeId'>): Promise<() => Promise<void>> {
  const dir = jobsDir(stateDir);
  const file = join(dir, `${job.id}.json`);
  const { startTime: pidStartTime, ...me } = currentOwner();
  const doc: JobFile = { ...job, startedAt: new Date().toISOString(), ...(pidStartTime !== undefined ? { pidStartTime } : {}), ...me };
  try {
    await makeJobsDirectory(dir);
    await writeFileAtomic(file, JSON.stringify(doc));
  } catch (cause) {
    // writeFileAtomic removes its temporary file; the record itself is in place only when the
    // directory's fsync failed after the rename (job ids are unique: the file is ours).
    await rm(file, { force: true }).catch(() => {});
    throw notADirectory(dir, cause) ?? new CairnError('UNAVAILABLE', `cannot record job ${job.id} in ${dir}: ${(cause as Error).message}`, { cause });
  }
  return () => rm(file, { force: true });
}

/**
 * What a record file holds: the job, `missing` (no such file: never written, or removed meanwhile),
 * `corrupt` (not a job record: unparsable JSON or a required field missing or of the wrong type),
 * or `unreadable` (the file exists but cannot be read; left alone). `UNAVAILABLE` when a file is
 * on the way to it (notADirectory: no job can be recorded there). Records are only ever written
 * whole (`registerJob` writes a temporary file `.<id>.json.<random>.tmp`, not named `*.json`,
 * and renames it), so a `corrupt` record is never one being written: it is damage and will never become valid.
 */
async function readJobFile(file: string): Promise<JobFile | 'missing' | 'corrupt' | 'unreadable'> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const notDir = notADirectory(dirname(file), err);
    if (notDir) throw notDir;
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'unreadable';
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return 'corrupt';
  }
  const d = doc as Partial<Record<keyof JobFile, unknown>> | null;
  const valid =
    typeof d === 'object' && d !== null && !Array.isArray(d) &&
    typeof d.id === 'string' && (d.kind === 'backup' || d.kind === 'restore') &&
    typeof d.pid === 'number' && Number.isSafeInteger(d.pid) && d.pid > 0 &&
    typeof d.backupId === 'string' && typeof d.volumeId === 'string' && typeof d.startedAt === 'string';
  return valid ? (doc as JobFile) : 'corrupt';
}

/** The default `warn`: a `warning:` line, the message's control characters escaped (it may name a file of the jobs directory). */
const warnOnStderr = (message: string) => void process.stderr.write(`warning: ${escapedText(message)}\n`);

/**
 * Every recorded job, oldest first, with whether its process still runs. A missing jobs directory
 * is no jobs; one that cannot be read (permissions, not a directory: notADirectory says which) is
 * `UNAVAILABLE`. A corrupt
 * record (see `readJobFile`: never a partly written one) is removed at once and reported through
 * `warn` (default: a `warning:` line on stderr); a record that cannot be read is skipped.
 */
export async function listJobs(stateDir: string, warn: (message: string) => void = warnOnStderr): Promise<JobListing[]> {
  const dir = jobsDir(stateDir);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw notADirectory(dir, cause) ?? new CairnError('UNAVAILABLE', `cannot read the jobs directory ${dir}: ${(cause as Error).message}`, { cause });
  }
  const out: JobListing[] = [];
  for (const name of names.filter((n) => n.endsWith('.json'))) {
    const file = join(dir, name);
    const doc = await readJobFile(file);
    if (doc === 'missing' || doc === 'unreadable') continue;
    if (doc === 'corrupt') {
      const removed = await rm(file, { force: true }).then(() => true, () => false);
      warn(removed ? `job record ${file} is corrupt (not a job record); removed it` : `job record ${file} is corrupt (not a job record) and could not be removed`);
      continue;
    }
    const state = jobProcessState(jobOwner(doc));
    const { host: _h, bootId: _b, pidNamespace: _n, machineId: _m, ...listed } = doc;
    out.push({ ...listed, alive: state === 'alive' || state === 'elsewhere', state });
  }
  return out.sort((a, b) => ordinal(a.startedAt, b.startedAt));
}

/**
 * Removes the record of `job` when its process no longer runs it (`alive` false). Never throws;
 * a record already gone is fine.
 */
export async function removeStaleJob(stateDir: string, job: JobListing): Promise<void> {
  if (job.alive || !ID.test(job.id)) return;
  await rm(join(jobsDir(stateDir), `${job.id}.json`), { force: true }).catch(() => {});
}

/**
 * What a job works on, for messages: `backup of volume <volumeId>` (a backup job's id is the new
 * backup's own), `restore of backup <backupId> to volume <volumeId>`.
 */
export function jobSubject(job: Pick<JobFile, 'kind' | 'backupId' | 'volumeId'>): string {
  return job.kind === 'restore' ? `restore of backup ${job.backupId} to volume ${job.volumeId}` : `backup of volume ${job.volumeId}`;
}

/** Why a stale record's process no longer runs its job, for messages. */
export function staleReason(job: Pick<JobFile, 'pid'>, state: JobProcessState): string {
  return state === 'reused' ? `its process ${job.pid} is gone and the pid now belongs to another process` : `its process ${job.pid} is gone`;
}

/**
 * Asks the process running job `id` to cancel it (SIGTERM; its handler aborts the job) and
 * waits up to `waitMs` (default 30 s) for the job record to go. Only the job's own process is
 * ever signalled: the pid must run with the recorded start time. `NOT_FOUND` for an unknown or
 * finished job (a record whose process exited, or whose pid now names another process, is
 * removed). A record without a start time (written by an older version) is signalled only when
 * /proc shows its pid running cairn; when that cannot be read it is `UNAVAILABLE` and nothing is
 * signalled. A job of another host or pid namespace (another container sharing the state
 * directory) is never signalled: `UNAVAILABLE`, the record is kept. `UNAVAILABLE` when the process
 * does not stop in time. A process that exits between the check and the signal (ESRCH) has
 * ended the job: its record is removed, `NOT_FOUND` as for a finished job. A process this user may
 * not signal (EPERM: it runs as another user) is `UNAVAILABLE` with `details: {job, pid}`, the
 * record kept; so is one whose record this user may not read (records are 0600: another user's
 * job), with `details: {job}`. A corrupt record is removed, `NOT_FOUND`.
 */
export async function cancelJob(stateDir: string, id: string, waitMs = 30_000): Promise<JobFile> {
  if (!ID.test(id)) throw new CairnError('NOT_FOUND', `no running job ${id}`);
  const file = join(jobsDir(stateDir), `${id}.json`);
  const doc = await readJobFile(file);
  if (doc === 'corrupt') {
    await rm(file, { force: true }).catch(() => {});
    throw new CairnError('NOT_FOUND', `no running job ${id} (its record was corrupt; removed it)`);
  }
  if (doc === 'missing') throw new CairnError('NOT_FOUND', `no running job ${id}`);
  if (doc === 'unreadable') {
    // Records are 0600: most likely the job of another user, whose process this user could not signal either.
    throw new CairnError('UNAVAILABLE', `the record ${file} of job ${id} cannot be read by this user (the job of another user?): cancel it as its owner (or as root)`, {
      details: { job: id },
    });
  }
  const owner = jobOwner(doc);
  const state = jobProcessState(owner);
  if (state === 'elsewhere') {
    const me = currentOwner();
    const otherMachine = owner.bootId !== me.bootId && owner.machineId !== undefined && me.machineId !== undefined && owner.machineId !== me.machineId;
    const where = owner.host !== hostname() ? `on host ${owner.host}` : otherMachine ? `on another machine named ${owner.host} (machine id ${owner.machineId})` : 'in another pid namespace (another container)';
    throw new CairnError('UNAVAILABLE', `job ${id} runs ${where}: cancel it there (if its process is gone, remove ${file})`);
  }
  if (state !== 'alive') {
    await rm(file, { force: true });
    throw new CairnError('NOT_FOUND', `job ${id} is not running (${staleReason(doc, state)}); removed its record`);
  }
  if (doc.pidStartTime === undefined && looksLikeCairn(doc.pid) !== true) {
    throw new CairnError(
      'UNAVAILABLE',
      `job ${id} was recorded by an older cairn without the process's start time, and process ${doc.pid} cannot be confirmed to be cairn: not signalling it (stop it yourself if it is the job's, then remove ${file})`,
    );
  }
  try {
    process.kill(doc.pid, 'SIGTERM');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EPERM') {
      throw new CairnError('UNAVAILABLE', `job ${id} runs in process ${doc.pid} of another user, which this user may not signal: cancel it as that user (or as root)`, {
        cause: err,
        details: { job: id, pid: doc.pid },
      });
    }
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw toCairnError(err, undefined, `cannot signal job ${id} (process ${doc.pid})`);
    // Exited between the check above and the signal: the job has ended.
    await rm(file, { force: true });
    throw new CairnError('NOT_FOUND', `job ${id} is not running (its process ${doc.pid} exited before it could be signalled); removed its record`);
  }
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline) {
    if (!(await exists(file)) || jobProcessState(owner) !== 'alive') return doc;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new CairnError('UNAVAILABLE', `job ${id} (process ${doc.pid}) did not stop within ${waitMs} ms`);
}

async function exists(file: string): Promise<boolean> {
  try {
    await readFile(file);
    return true;
  } catch {
    return false;
  }
}
