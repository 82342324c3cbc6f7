import { execFile } from 'node:child_process';
import { chmod, lstat, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listJobs, registerJob } from '../src/jobs/job-files.js';
import { BIN, jsonError, removeDir, tempDir } from './helpers.js';

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

/**
 * Lets other users traverse every directory above `path` (adds o+x where it is missing, as a
 * checkout in a `mktemp -d` directory lacks it) so a process of another user can run the CLI
 * from this checkout; resolves with the undo.
 */
async function traversableByOthers(path: string): Promise<() => Promise<void>> {
  const changed: [string, number][] = [];
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    const mode = (await stat(dir)).mode & 0o7777;
    if ((mode & 0o001) === 0) {
      await chmod(dir, mode | 0o001);
      changed.push([dir, mode]);
    }
    if (dir === dirname(dir)) break;
  }
  return async () => {
    for (const [dir, mode] of changed.reverse()) await chmod(dir, mode);
  };
}

/** Runs `fn` with the process umask set to `mask` (test files run in their own process: pool forks). */
async function withUmask<T>(mask: number, fn: () => Promise<T>): Promise<T> {
  const old = process.umask(mask);
  try {
    return await fn();
  } finally {
    process.umask(old);
  }
}

/**
 * Job records (`<stateDir>/jobs/<id>.json`) are written through an unpredictable temporary name
 * created exclusively, so nobody can redirect the write by planting a link, and they are private
 * to their user: the jobs directory is made 0700 and records 0600, whatever the umask.
 */
describe('job records: temporary file, modes', () => {
  let root: string;
  let stateDir: string;
  const jobsDir = () => join(stateDir, 'jobs');

  beforeEach(async () => {
    root = await tempDir();
    stateDir = join(root, '.cairn');
  });
  afterEach(() => removeDir(root));

  it('registerJob() does not write through a link planted at the old predictable temporary name <id>.json.<pid>.tmp', async () => {
    const victim = join(root, 'victim');
    await writeFile(victim, 'precious');
    await mkdir(jobsDir(), { recursive: true });
    await symlink(victim, join(jobsDir(), `planted.json.${process.pid}.tmp`));
    const unregister = await registerJob(stateDir, { id: 'planted', kind: 'backup', backupId: 'b', volumeId: 'v' });
    expect(await readFile(victim, 'utf8')).toBe('precious');
    const record = join(jobsDir(), 'planted.json');
    expect((await lstat(record)).isFile()).toBe(true);
    expect(JSON.parse(await readFile(record, 'utf8'))).toMatchObject({ id: 'planted', pid: process.pid });
    await unregister();
    expect(await readdir(jobsDir())).toEqual([`planted.json.${process.pid}.tmp`]); // the planted link, untouched
  });

  it('under umask 000 registerJob() makes the jobs directory 0700 and the record 0600, and leaves no temporary file', async () => {
    const unregister = await withUmask(0o000, () => registerJob(stateDir, { id: 'private', kind: 'restore', backupId: 'b', volumeId: 'v' }));
    expect((await stat(jobsDir())).mode & 0o777).toBe(0o700);
    expect((await stat(join(jobsDir(), 'private.json'))).mode & 0o777).toBe(0o600);
    expect(await readdir(jobsDir())).toEqual(['private.json']);
    expect((await listJobs(stateDir)).map((j) => j.id)).toEqual(['private']);
    await unregister();
    expect(await readdir(jobsDir())).toEqual([]);
  });

  it('an existing jobs directory keeps its mode (a shared one set up on purpose)', async () => {
    await mkdir(jobsDir(), { recursive: true });
    await chmod(jobsDir(), 0o770);
    const unregister = await registerJob(stateDir, { id: 'shared', kind: 'backup', backupId: 'b', volumeId: 'v' });
    expect((await stat(jobsDir())).mode & 0o777).toBe(0o770);
    await unregister();
  });

  it.skipIf(!isRoot)('backup cancel by another user of a job whose record it may not read is UNAVAILABLE naming the job, the record unread (needs root to start a process of another user; skipped otherwise)', async () => {
    await chmod(root, 0o755); // the other user may reach the working directory, not the jobs
    await registerJob(stateDir, { id: 'root-job', kind: 'backup', backupId: 'b', volumeId: 'v' });
    const undo = await traversableByOthers(BIN);
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [BIN, 'backup', 'cancel', 'root-job', '--wait', '1', '--json'], { cwd: root, uid: NOBODY, gid: NOBODY, env: { ...process.env, CAIRN_CONFIG: undefined, HOME: '/' } }, (err, stdout, stderr) => {
        const code = (err as { code?: unknown } | null)?.code;
        resolve({ code: err ? (typeof code === 'number' ? code : 1) : 0, stdout, stderr });
      });
    }).finally(undo);
    expect(r.code, r.stderr).toBe(6);
    expect(jsonError(r)).toMatchObject({ code: 'UNAVAILABLE', details: { job: 'root-job' } });
    expect(jsonError(r).details.pid).toBeUndefined(); // the record (naming the pid) was not readable to it
    expect(await readdir(jobsDir())).toEqual(['root-job.json']);
  });
});
