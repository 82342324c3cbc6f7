import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { processStartTime } from '@cairn/core';
import { cairn, cairnJson, cairnSpawn, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

type Job = { id: string; kind: string; backupId: string; volumeId: string; pid: number; startedAt: string };

/** A job file names its process by pid and kernel start time: dead or pid-reused jobs are never taken for running ones. */
describe('job files and process identity', () => {
  let cwd: string;
  let volumeId: string;
  const jobsDir = () => join(cwd, '.cairn', 'jobs');
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'v.raw'), 8 * MiB);
    volumeId = (await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'slow'], { cwd })).volume.id;
  });
  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  afterAll(() => removeDir(cwd));

  /** Starts a slow backup (8 MiB at 512 KiB/s) and waits for its job record. */
  async function startSlowBackup(): Promise<{ child: ChildProcess; exit: Promise<unknown>; job: Job }> {
    const { child, exit } = cairnSpawn(['backup', 'create', volumeId, '--read-rate', '512KiB', '--json'], { cwd });
    children.push(child);
    for (let i = 0; i < 100; i++) {
      const jobs = await cairnJson<Job[]>(['backup', 'jobs'], { cwd });
      const job = jobs.find((j) => j.pid === child.pid);
      if (job) return { child, exit, job };
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('the backup never recorded its job');
  }

  /** A `sleep` that stands for an unrelated process that got a job's pid. */
  function unrelatedProcess(): ChildProcess {
    const sleeper = spawn('sleep', ['300'], { stdio: 'ignore' });
    children.push(sleeper);
    return sleeper;
  }

  const alive = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;

  it('records the kernel start time of the job process', async () => {
    const { child, exit, job } = await startSlowBackup();
    const doc = JSON.parse(await readFile(join(jobsDir(), `${job.id}.json`), 'utf8'));
    expect(doc.pidStartTime).toBe(processStartTime(child.pid!));
    expect(job).not.toHaveProperty('pidStartTime'); // the listed Job shape is unchanged
    child.kill('SIGKILL');
    await exit;
  });

  it('backup jobs reports a SIGKILLed job as dead and removes its record', async () => {
    const { child, exit, job } = await startSlowBackup();
    child.kill('SIGKILL');
    await exit;
    const r = await cairn(['backup', 'jobs', '--json'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
    expect(r.stderr).toContain(`job ${job.id}`);
    expect(r.stderr).toMatch(/dead/);
    expect(await readdir(jobsDir())).not.toContain(`${job.id}.json`);
  });

  it('the dead-job warning names what the job works on: a backup its volume, a restore its backup and volume', async () => {
    const exited = spawn('true', { stdio: 'ignore' });
    await new Promise((r) => exited.once('exit', r));
    await mkdir(jobsDir(), { recursive: true });
    const record = (id: string, kind: string) => ({ id, kind, pid: exited.pid, backupId: 'b-1', volumeId: 'v-1', startedAt: new Date().toISOString(), pidStartTime: 1 });
    await writeFile(join(jobsDir(), 'dead-backup.json'), JSON.stringify({ ...record('dead-backup', 'backup'), backupId: 'dead-backup' }));
    await writeFile(join(jobsDir(), 'dead-restore.json'), JSON.stringify(record('dead-restore', 'restore')));
    const r = await cairn(['backup', 'jobs', '--json'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('warning: job dead-backup (backup of volume v-1) is dead: ');
    expect(r.stderr).toContain('warning: job dead-restore (restore of backup b-1 to volume v-1) is dead: ');
    expect(await readdir(jobsDir())).not.toContain('dead-backup.json');
  });

  it('a job file whose pid now names another process is not listed, not signalled, and removed', async () => {
    const sleeper = unrelatedProcess();
    await new Promise((r) => sleeper.once('spawn', r));
    const startTime = processStartTime(sleeper.pid!)!;
    expect(startTime).toBeGreaterThan(0);
    await mkdir(jobsDir(), { recursive: true });
    const stale = { id: 'reused-pid', kind: 'backup', pid: sleeper.pid, backupId: 'b', volumeId: 'v', startedAt: new Date().toISOString(), pidStartTime: startTime - 1 };
    await writeFile(join(jobsDir(), 'reused-pid.json'), JSON.stringify(stale));
    expect(await cairnJson(['backup', 'jobs'], { cwd })).toEqual([]);

    await writeFile(join(jobsDir(), 'reused-pid.json'), JSON.stringify(stale));
    const cancel = await cairn(['backup', 'cancel', 'reused-pid', '--wait', '1'], { cwd });
    expect(cancel.code, cancel.stderr).toBe(3);
    await new Promise((r) => setTimeout(r, 200));
    expect(alive(sleeper)).toBe(true);
    expect(await readdir(jobsDir())).not.toContain('reused-pid.json');
  });

  it('an old job file (no start time) naming a non-cairn process is not listed or signalled', async () => {
    const sleeper = unrelatedProcess();
    await new Promise((r) => sleeper.once('spawn', r));
    await mkdir(jobsDir(), { recursive: true });
    const legacy = { id: 'legacy', kind: 'backup', pid: sleeper.pid, backupId: 'b', volumeId: 'v', startedAt: new Date().toISOString() };
    await writeFile(join(jobsDir(), 'legacy.json'), JSON.stringify(legacy));
    const cancel = await cairn(['backup', 'cancel', 'legacy', '--wait', '1'], { cwd });
    expect(cancel.code, cancel.stderr).toBe(3);
    await new Promise((r) => setTimeout(r, 200));
    expect(alive(sleeper)).toBe(true);
    await writeFile(join(jobsDir(), 'legacy.json'), JSON.stringify(legacy));
    expect(await cairnJson(['backup', 'jobs'], { cwd })).toEqual([]);
    expect(alive(sleeper)).toBe(true);
  });

  it('an old job file (no start time) naming a running cairn job can still be cancelled', async () => {
    const { exit, job } = await startSlowBackup();
    const { pidStartTime: _t, ...legacy } = JSON.parse(await readFile(join(jobsDir(), `${job.id}.json`), 'utf8'));
    await writeFile(join(jobsDir(), `${job.id}.json`), JSON.stringify(legacy));
    expect((await cairnJson<Job[]>(['backup', 'jobs'], { cwd })).map((j) => j.id)).toContain(job.id);
    expect(await cairnJson(['backup', 'cancel', job.id], { cwd })).toMatchObject({ cancelled: job.id });
    expect(((await exit) as { code: number }).code).toBe(130);
  });
});
