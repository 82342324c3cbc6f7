import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CairnError, currentOwner, processStartTime } from '@cairn/core';
import { cancelJob, listJobs, registerJob } from '../src/jobs/job-files.js';
import { cairnUnprivileged, jsonError, removeDir, tempDir } from './helpers.js';

const isRoot = process.getuid?.() === 0;

/** How job-files reports a jobs directory it cannot read, a job that ends as it is cancelled, and a corrupt record. */
describe('job files: unreadable directory, cancel race, corrupt records', () => {
  let stateDir: string;
  const jobsDir = () => join(stateDir, 'jobs');

  beforeEach(async () => {
    stateDir = join(await tempDir(), '.cairn');
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await removeDir(join(stateDir, '..'));
  });

  it('listJobs() is [] for a missing jobs directory and UNAVAILABLE for one that cannot be read', async () => {
    expect(await listJobs(stateDir)).toEqual([]);
    await mkdir(stateDir, { recursive: true });
    await writeFile(jobsDir(), 'not a directory');
    const err = await listJobs(stateDir).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CairnError);
    expect(err).toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('cancelJob() of a job whose process exits just before the signal (ESRCH) removes the record: NOT_FOUND', async () => {
    await registerJob(stateDir, { id: 'ending', kind: 'backup', backupId: 'b', volumeId: 'v' });
    // The liveness checks (signal 0) see the process; it is gone by the time SIGTERM is sent.
    const kill = process.kill.bind(process);
    const signalled: (string | number | undefined)[] = [];
    vi.spyOn(process, 'kill').mockImplementation((pid, signal) => {
      if (signal === 0) return kill(pid, 0);
      signalled.push(signal);
      throw Object.assign(new Error('kill ESRCH'), { code: 'ESRCH', errno: -3, syscall: 'kill' });
    });
    const err = await cancelJob(stateDir, 'ending', 1000).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CairnError);
    expect(err).toMatchObject({ code: 'NOT_FOUND' });
    expect(signalled).toEqual(['SIGTERM']);
    expect(await readdir(jobsDir())).toEqual([]);
  });

  it.skipIf(!isRoot)('backup cancel of a job whose process runs as another user (EPERM) is UNAVAILABLE naming the job and pid; the job runs on, its record kept', async () => {
    // A process of uid 65534; cancel runs without capabilities, so the kernel refuses the signal.
    const other = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'sleep', '60'], { stdio: 'ignore' });
    try {
      await new Promise((r) => other.once('spawn', r));
      const pid = other.pid!;
      for (let i = 0; i < 200 && !(await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).startsWith('sleep'); i++) await new Promise((r) => setTimeout(r, 10));
      const { startTime: _t, pid: _p, ...here } = currentOwner();
      const record = { id: 'foreign', kind: 'backup', pid, backupId: 'b', volumeId: 'v', startedAt: new Date().toISOString(), pidStartTime: processStartTime(pid), ...here };
      await mkdir(jobsDir(), { recursive: true });
      await writeFile(join(jobsDir(), 'foreign.json'), JSON.stringify(record));
      const r = await cairnUnprivileged(['backup', 'cancel', 'foreign', '--wait', '1', '--json'], join(stateDir, '..'));
      expect(r.code, r.stderr).toBe(6);
      expect(jsonError(r)).toMatchObject({ code: 'UNAVAILABLE', details: { job: 'foreign', pid } });
      expect(other.exitCode).toBeNull();
      expect(other.signalCode).toBeNull();
      expect(await readdir(jobsDir())).toEqual(['foreign.json']);
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('listJobs() removes a record that cannot be parsed (records are written atomically) with a warning, and lists the others', async () => {
    await registerJob(stateDir, { id: 'good', kind: 'backup', backupId: 'b', volumeId: 'v' });
    await writeFile(join(jobsDir(), 'garbled.json'), '{"id": "garbled", "pid": 12');
    await writeFile(join(jobsDir(), 'not-a-job.json'), '[1, 2]');
    const warnings: string[] = [];
    const jobs = await listJobs(stateDir, (m) => warnings.push(m));
    expect(jobs.map((j) => j.id)).toEqual(['good']);
    expect((await readdir(jobsDir())).sort()).toEqual(['good.json']);
    expect(warnings).toHaveLength(2);
    expect(warnings.join('\n')).toMatch(/garbled\.json/);
    expect(warnings.join('\n')).toMatch(/not-a-job\.json/);
  });
});
