import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CairnError } from '@cairn/core';
import { cancelJob, listJobs, registerJob } from '../src/jobs/job-files.js';
import { removeDir, tempDir } from './helpers.js';

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
