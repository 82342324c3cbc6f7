import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { currentOwner, processStartTime } from '@cairn/core';
import { cancelJob, listJobs, registerJob } from '../src/jobs/job-files.js';
import { cairnJson, removeDir, tempDir } from './helpers.js';

/**
 * A state directory may be shared by containers or machines under one host name (a config
 * directory on a shared disk): a job file names its process by host, machine id, boot, pid
 * namespace, pid and start time, and a job of another pid namespace or machine is never judged
 * dead nor signalled from here.
 */
describe('job files of other pid namespaces and boots', () => {
  let stateDir: string;
  const jobsDir = () => join(stateDir, 'jobs');
  const children: ChildProcess[] = [];
  const me = currentOwner();

  beforeEach(async () => {
    stateDir = join(await tempDir(), '.cairn');
  });
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await removeDir(join(stateDir, '..'));
  });

  /** A running `sleep` and its start time: the process a job file's pid names here. */
  async function sleeper(): Promise<{ child: ChildProcess; startTime: number }> {
    const child = spawn('sleep', ['300'], { stdio: 'ignore' });
    children.push(child);
    await new Promise((r) => child.once('spawn', r));
    return { child, startTime: processStartTime(child.pid!)! };
  }
  const running = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;

  async function writeJob(id: string, fields: object): Promise<string> {
    await mkdir(jobsDir(), { recursive: true });
    const file = join(jobsDir(), `${id}.json`);
    await writeFile(file, JSON.stringify({ id, kind: 'backup', backupId: 'b', volumeId: 'v', startedAt: new Date().toISOString(), ...fields }));
    return file;
  }

  it('registerJob() records host, boot id and pid namespace; listJobs() lists the job without them', async () => {
    expect(me.bootId).toBeDefined();
    expect(me.pidNamespace).toBeDefined();
    const unregister = await registerJob(stateDir, { id: 'mine', kind: 'backup', backupId: 'b', volumeId: 'v' });
    const doc = JSON.parse(await readFile(join(jobsDir(), 'mine.json'), 'utf8'));
    expect(doc).toMatchObject({ pid: process.pid, pidStartTime: me.startTime, host: hostname(), bootId: me.bootId, pidNamespace: me.pidNamespace });
    const [listed] = await listJobs(stateDir);
    expect(listed).toMatchObject({ id: 'mine', alive: true, state: 'alive' });
    expect(Object.keys(listed!).sort()).toEqual(['alive', 'backupId', 'id', 'kind', 'pid', 'pidStartTime', 'startedAt', 'state', 'volumeId']);
    await unregister();
  });

  it('a job of another pid namespace is listed as elsewhere, kept, and cancelJob() signals nothing (UNAVAILABLE), even when its pid and start time match a process here', async () => {
    const { child, startTime } = await sleeper();
    await writeJob('theirs', { pid: child.pid, pidStartTime: startTime, host: hostname(), bootId: me.bootId, pidNamespace: me.pidNamespace! + 1 });
    await writeJob('theirs-no-pid-here', { pid: 2 ** 22 + 4321, pidStartTime: 1, host: hostname(), bootId: me.bootId, pidNamespace: me.pidNamespace! + 1 });
    expect((await listJobs(stateDir)).map((j) => [j.id, j.state, j.alive]).sort()).toEqual([
      ['theirs', 'elsewhere', true],
      ['theirs-no-pid-here', 'elsewhere', true],
    ]);
    const listedByCli = await cairnJson<object[]>(['backup', 'jobs'], { cwd: join(stateDir, '..') });
    expect(listedByCli.map((j) => Object.keys(j).sort())).toEqual([
      ['backupId', 'id', 'kind', 'pid', 'startedAt', 'volumeId'],
      ['backupId', 'id', 'kind', 'pid', 'startedAt', 'volumeId'],
    ]);
    await expect(cancelJob(stateDir, 'theirs', 500)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(cancelJob(stateDir, 'theirs-no-pid-here', 500)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await new Promise((r) => setTimeout(r, 200));
    expect(running(child)).toBe(true);
    expect((await readdir(jobsDir())).sort()).toEqual(['theirs-no-pid-here.json', 'theirs.json']);
  });

  it('a job of an earlier boot of this host is gone, even when its pid and start time match a process here: removed, not signalled', async () => {
    const { child, startTime } = await sleeper();
    await writeJob('rebooted', { pid: child.pid, pidStartTime: startTime, host: hostname(), bootId: 'an-earlier-boot', pidNamespace: me.pidNamespace });
    expect((await listJobs(stateDir)).find((j) => j.id === 'rebooted')).toMatchObject({ state: 'gone', alive: false });
    await expect(cancelJob(stateDir, 'rebooted', 500)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await new Promise((r) => setTimeout(r, 200));
    expect(running(child)).toBe(true);
    expect(await readdir(jobsDir())).not.toContain('rebooted.json');
  });

  it('registerJob() records the machine id; a job of another machine under this host name is elsewhere, kept and not signalled, whatever its boot id', async () => {
    expect(me.machineId).toMatch(/^[0-9a-f]{32}$/);
    const unregister = await registerJob(stateDir, { id: 'mine', kind: 'backup', backupId: 'b', volumeId: 'v' });
    expect(JSON.parse(await readFile(join(jobsDir(), 'mine.json'), 'utf8'))).toMatchObject({ machineId: me.machineId });
    await unregister();
    const { child, startTime } = await sleeper();
    const twin = { host: hostname(), bootId: 'another-machines-boot', pidNamespace: me.pidNamespace, machineId: `not-${me.machineId}` };
    await writeJob('twin', { ...twin, pid: child.pid, pidStartTime: startTime });
    await writeJob('twin-no-pid-here', { ...twin, pid: 2 ** 22 + 4321, pidStartTime: 1 });
    await writeJob('rebooted-same-machine', { ...twin, machineId: me.machineId, pid: 2 ** 22 + 4321, pidStartTime: 1 });
    const listed = await listJobs(stateDir);
    expect(listed.map((j) => [j.id, j.state, j.alive]).sort()).toEqual([
      ['rebooted-same-machine', 'gone', false],
      ['twin', 'elsewhere', true],
      ['twin-no-pid-here', 'elsewhere', true],
    ]);
    expect(listed.every((j) => !('machineId' in j))).toBe(true);
    await expect(cancelJob(stateDir, 'twin', 500)).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('on another machine named') });
    await expect(cancelJob(stateDir, 'twin-no-pid-here', 500)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await new Promise((r) => setTimeout(r, 200));
    expect(running(child)).toBe(true);
    expect((await readdir(jobsDir())).sort()).toEqual(['rebooted-same-machine.json', 'twin-no-pid-here.json', 'twin.json']);
  });

  it('a job of this namespace and boot is judged by pid and start time; one of another host is elsewhere', async () => {
    const { child, startTime } = await sleeper();
    await writeJob('here-reused', { pid: child.pid, pidStartTime: startTime + 1, host: hostname(), bootId: me.bootId, pidNamespace: me.pidNamespace });
    await writeJob('other-host', { pid: 2 ** 22 + 4321, pidStartTime: 1, host: `${hostname()}-elsewhere` });
    await writeJob('legacy-gone', { pid: 2 ** 22 + 4321, pidStartTime: 1 });
    const states = Object.fromEntries((await listJobs(stateDir)).map((j) => [j.id, j.state]));
    expect(states).toMatchObject({ 'here-reused': 'reused', 'other-host': 'elsewhere', 'legacy-gone': 'gone' });
    await expect(cancelJob(stateDir, 'other-host', 500)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(cancelJob(stateDir, 'here-reused', 500)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(running(child)).toBe(true);
  });
});
