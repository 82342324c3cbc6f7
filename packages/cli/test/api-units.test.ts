import { CairnError, ErrorCodes } from '@cairn/core';
import { describe, expect, it, vi } from 'vitest';
import { isLoopback, parseListen } from '../src/api/auth.js';
import { errorResponse, forOperator, HTTP_STATUS, HttpError, TransportCodes } from '../src/api/errors.js';
import { JobTable, type JobSpec } from '../src/api/jobs.js';
import { IdleRelease } from '../src/api/idle-release.js';
import { PeriodicRecovery } from '../src/api/periodic-recovery.js';
import { Output } from '../src/output/output.js';
import { printRecovery } from '../src/output/recovery-report.js';
import type { RecoveryReport } from '@cairn/core';

/** A job the test settles by hand. */
function manualJob(id: string): JobSpec & { succeed(result: unknown): void; fail(err: unknown): void; cancelled: string[] } {
  let succeed!: (r: unknown) => void;
  let fail!: (e: unknown) => void;
  const outcome = new Promise<{ result: unknown }>((res, rej) => {
    succeed = (result) => res({ result });
    fail = rej;
  });
  const cancelled: string[] = [];
  return {
    id,
    kind: 'backup',
    backupId: id,
    progress: () => ({ bytesDone: 1, bytesTotal: 2 }),
    cancel: (reason) => {
      cancelled.push(reason);
      fail(new CairnError('CANCELLED', reason));
    },
    outcome,
    succeed,
    fail,
    cancelled,
  };
}

describe('API error table', () => {
  it('maps every CairnError code and transport code to a status; BUSY and UNAVAILABLE carry Retry-After', () => {
    for (const code of [...ErrorCodes, ...TransportCodes]) expect(HTTP_STATUS[code], code).toBeGreaterThanOrEqual(400);
    expect(errorResponse(new CairnError('NOT_FOUND', 'x'))).toEqual({ status: 404, headers: {}, body: { error: { code: 'NOT_FOUND', message: 'x' } } });
    expect(errorResponse(new CairnError('BUSY', 'locked', { details: { lock: 'l1' } }))).toEqual({
      status: 409,
      headers: { 'retry-after': '5' },
      body: { error: { code: 'BUSY', message: 'locked', details: { lock: 'l1' } } },
    });
    expect(errorResponse(new CairnError('UNAVAILABLE', 'down')).headers).toEqual({ 'retry-after': '5' });
    expect(errorResponse(new CairnError('NOT_SUPPORTED', 'no')).status).toBe(422);
    expect(errorResponse(new CairnError('CORRUPT', 'bad')).status).toBe(500);
    expect(errorResponse(new HttpError('UNAUTHENTICATED', 'who?', { 'www-authenticate': 'Bearer' }))).toEqual({
      status: 401,
      headers: { 'www-authenticate': 'Bearer' },
      body: { error: { code: 'UNAUTHENTICATED', message: 'who?' } },
    });
  });

  it('framework errors get stable codes; anything unknown is INTERNAL without its cause', () => {
    expect(errorResponse(Object.assign(new Error('x'), { code: 'FST_ERR_CTP_INVALID_JSON_BODY', statusCode: 400 })).body.error.code).toBe('INVALID_INPUT');
    expect(errorResponse(Object.assign(new Error('x'), { code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 })).status).toBe(413);
    expect(errorResponse(Object.assign(new Error('odd'), { statusCode: 400 })).body.error).toEqual({ code: 'INVALID_INPUT', message: 'odd' });
    const internal = errorResponse(new TypeError('boom'));
    expect(internal).toEqual({ status: 500, headers: {}, body: { error: { code: 'INTERNAL', message: 'boom' } } });
  });
});

describe('--listen', () => {
  it('parses host:port and knows loopback addresses', () => {
    expect(parseListen('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseListen('[::1]:8470')).toEqual({ host: '::1', port: 8470 });
    for (const bad of ['8470', '127.0.0.1', '127.0.0.1:99999', ':80', '::1:80']) expect(() => parseListen(bad), bad).toThrow(/host:port/);
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1']) expect(isLoopback(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.org', '::ffff:10.0.0.1']) expect(isLoopback(h), h).toBe(false);
  });
});

describe('JobTable', () => {
  it('follows a job to its end, refuses to cancel an ended job, and forgets the oldest ended jobs beyond its bound', async () => {
    const table = new JobTable(2);
    const jobs = ['a', 'b', 'c'].map(manualJob);
    for (const j of jobs) expect(table.add(j)).toMatchObject({ id: j.id, state: 'running', progress: { bytesDone: 1, bytesTotal: 2 } });
    expect(table.running).toBe(3);
    jobs[0]!.succeed({ ok: 1 });
    jobs[1]!.fail(new CairnError('UNAVAILABLE', 'disk gone'));
    expect(await table.wait('a', 1000)).toMatchObject({ state: 'succeeded', result: { ok: 1 } });
    expect(await table.wait('b', 1000)).toMatchObject({ state: 'failed', error: { code: 'UNAVAILABLE', message: 'disk gone' } });
    expect(() => table.cancel('a')).toThrow(expect.objectContaining({ code: 'CONFLICT' }));
    expect(table.cancel('c')).toMatchObject({ cancelRequested: true });
    expect(await table.wait('c', 1000)).toMatchObject({ state: 'cancelled', error: { code: 'CANCELLED' } });
    // Three ended jobs, two kept: the first to end is forgotten.
    expect(() => table.get('a')).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
    expect(table.list().map((j) => j.id)).toEqual(['b', 'c']);
    expect(table.list({ state: 'cancelled' }).map((j) => j.id)).toEqual(['c']);
  });

  it('wait returns a running job after the timeout; shutdown cancels running jobs and any added later', async () => {
    const table = new JobTable();
    const slow = manualJob('slow');
    table.add(slow);
    expect(await table.wait('slow', 20)).toMatchObject({ state: 'running' });
    await table.shutdown();
    expect(slow.cancelled).toEqual(['the server is shutting down']);
    expect(table.get('slow').state).toBe('cancelled');
    const late = manualJob('late');
    expect(table.add(late)).toMatchObject({ cancelRequested: true });
    await table.settled();
    expect(table.get('late').state).toBe('cancelled');
  });
});

describe('releasing memory when idle', () => {
  it('JobTable calls onIdle each time the last running job ends, not before', async () => {
    let idle = 0;
    const table = new JobTable(10, () => idle++);
    const [a, b] = ['a', 'b'].map(manualJob);
    table.add(a!);
    table.add(b!);
    a!.succeed({});
    await table.wait('a', 1000);
    expect(idle).toBe(0); // b still runs
    b!.fail(new CairnError('UNAVAILABLE', 'gone'));
    await table.wait('b', 1000);
    expect(idle).toBe(1);
  });

  it('IdleRelease releases once idle for its delay, restarts the delay on each idle(), and not while a job runs', () => {
    // Fake timers: the delays are the contract, and real ones would race a loaded machine's pauses.
    vi.useFakeTimers();
    try {
      let running = false;
      let released = 0;
      const r = new IdleRelease(30, () => !running, () => released++);
      r.idle();
      vi.advanceTimersByTime(15);
      r.idle(); // a job ran and ended meanwhile: the delay starts again
      vi.advanceTimersByTime(20);
      expect(released).toBe(0); // 35 ms since the first idle(), 20 since the second
      vi.advanceTimersByTime(10);
      expect(released).toBe(1);
      running = true;
      r.idle();
      vi.advanceTimersByTime(60);
      expect(released).toBe(1); // a job running when the delay ends: nothing released
      r.idle();
      r.stop();
      running = false;
      vi.advanceTimersByTime(60);
      expect(released).toBe(1);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('recovery while the server runs', () => {
  it('PeriodicRecovery runs every interval, never two at once, and stop waits for a run in progress', async () => {
    const report = { failedBackups: ['x'], restoredBackups: [], resumedDeletes: [], resetVolumes: [], errorRestoringVolumes: [], removedSnapshots: [], skipped: [], errors: [] };
    let runs = 0;
    let concurrent = 0;
    let overlap = false;
    const reports: unknown[] = [];
    const recovery = new PeriodicRecovery({
      intervalMs: 10,
      recover: async () => {
        runs++;
        overlap ||= ++concurrent > 1;
        await new Promise((r) => setTimeout(r, 30));
        concurrent--;
        return report;
      },
      onReport: (r) => reports.push(r),
      onError: () => {},
    });
    recovery.start();
    // Two runs at least (the second scheduled by the first's end), however slow the machine.
    await vi.waitFor(() => expect(runs).toBeGreaterThanOrEqual(2), { timeout: 20_000, interval: 10 });
    expect(overlap).toBe(false);
    await recovery.stop();
    expect(concurrent).toBe(0);
    const after = runs;
    await new Promise((r) => setTimeout(r, 60));
    expect(runs).toBe(after);
    expect(reports.length).toBe(runs);
  });
});

describe('printing a recovery', () => {
  const empty: RecoveryReport = { failedBackups: [], restoredBackups: [], resumedDeletes: [], resetVolumes: [], errorRestoringVolumes: [], removedSnapshots: [], skipped: [], errors: [] };
  const printed = (options: { quiet?: boolean }, report: RecoveryReport) => {
    const lines: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string) => (lines.push(chunk), true)) as typeof process.stderr.write;
    try {
      printRecovery(new Output(options), report, 'an earlier run');
    } finally {
      process.stderr.write = write;
    }
    return lines.join('');
  };

  it('counts what was resolved (not what was left alone) and warns of every failed step, also with --quiet', () => {
    const report = { ...empty, failedBackups: ['b1'], resetVolumes: ['v1'], skipped: ['live'], errors: ['b2: UNAVAILABLE store down'] };
    expect(printed({}, report)).toBe('recovered 2 item(s) left in flight by an earlier run\nwarning: recovery: b2: UNAVAILABLE store down\n');
    expect(printed({ quiet: true }, report)).toBe('warning: recovery: b2: UNAVAILABLE store down\n');
    expect(printed({}, { ...empty, skipped: ['live'] })).toBe('');
  });
});

describe('forOperator', () => {
  it('sends 5xx errors to the operator, UNAVAILABLE only when a system error is behind it', () => {
    const sys = (code: string) => Object.assign(new Error(code), { code });
    expect(forOperator(new CairnError('INTERNAL', 'bug'), 500)).toBe(true);
    expect(forOperator(new CairnError('CORRUPT', 'bad chunk'), 500)).toBe(true);
    expect(forOperator(new CairnError('UNAVAILABLE', 'the server is shutting down'), 503)).toBe(false);
    expect(forOperator(new CairnError('UNAVAILABLE', 'volumes directory', { cause: sys('EACCES') }), 503)).toBe(true);
    expect(forOperator(new CairnError('UNAVAILABLE', 'full', { cause: new CairnError('UNAVAILABLE', 'put', { cause: sys('ENOSPC') }) }), 503)).toBe(true);
    expect(forOperator(new CairnError('NOT_FOUND', 'x', { cause: sys('ENOENT') }), 404)).toBe(false);
  });
});
