import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, ordinal } from '@cairn/core';

/** What a running command records about its job in `<stateDir>/jobs/<id>.json`. */
export interface JobFile {
  id: string;
  kind: 'backup' | 'restore';
  pid: number;
  backupId: string;
  volumeId: string;
  startedAt: string;
}

export interface JobListing extends JobFile {
  /** False when the recorded process no longer runs (the file is stale). */
  alive: boolean;
}

const jobsDir = (stateDir: string) => join(stateDir, 'jobs');
const ID = /^[A-Za-z0-9-]{1,64}$/;

/**
 * Records a job of this process; returns the function that removes the record (idempotent).
 * `UNAVAILABLE` when the record cannot be written (nothing is left behind then).
 */
export async function registerJob(stateDir: string, job: Omit<JobFile, 'pid' | 'startedAt'>): Promise<() => Promise<void>> {
  const dir = jobsDir(stateDir);
  const file = join(dir, `${job.id}.json`);
  const tmp = `${file}.${process.pid}.tmp`;
  const doc: JobFile = { ...job, pid: process.pid, startedAt: new Date().toISOString() };
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(tmp, JSON.stringify(doc));
    await rename(tmp, file);
  } catch (cause) {
    await rm(tmp, { force: true }).catch(() => {});
    throw new CairnError('UNAVAILABLE', `cannot record job ${job.id} in ${dir}: ${(cause as Error).message}`, { cause });
  }
  return () => rm(file, { force: true });
}

/** Every recorded job, oldest first, with whether its process still runs. */
export async function listJobs(stateDir: string): Promise<JobListing[]> {
  let names: string[];
  try {
    names = await readdir(jobsDir(stateDir));
  } catch {
    return [];
  }
  const out: JobListing[] = [];
  for (const name of names.filter((n) => n.endsWith('.json'))) {
    try {
      const doc = JSON.parse(await readFile(join(jobsDir(stateDir), name), 'utf8')) as JobFile;
      out.push({ ...doc, alive: pidAlive(doc.pid) });
    } catch {
      /* removed meanwhile or half-written: not a job */
    }
  }
  return out.sort((a, b) => ordinal(a.startedAt, b.startedAt));
}

/**
 * Asks the process running job `id` to cancel it (SIGTERM; its handler aborts the job) and
 * waits up to `waitMs` (default 30 s) for the job record to go. `NOT_FOUND` for an unknown or
 * finished job (a stale record is removed); `UNAVAILABLE` when the process does not stop in time.
 */
export async function cancelJob(stateDir: string, id: string, waitMs = 30_000): Promise<JobFile> {
  if (!ID.test(id)) throw new CairnError('NOT_FOUND', `no running job ${id}`);
  const file = join(jobsDir(stateDir), `${id}.json`);
  let doc: JobFile;
  try {
    doc = JSON.parse(await readFile(file, 'utf8')) as JobFile;
  } catch {
    throw new CairnError('NOT_FOUND', `no running job ${id}`);
  }
  if (!pidAlive(doc.pid)) {
    await rm(file, { force: true });
    throw new CairnError('NOT_FOUND', `job ${id} is not running (its process ${doc.pid} is gone)`);
  }
  process.kill(doc.pid, 'SIGTERM');
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline) {
    if (!(await exists(file)) || !pidAlive(doc.pid)) return doc;
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

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
