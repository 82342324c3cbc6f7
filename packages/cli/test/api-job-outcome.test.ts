import { describe, expect, it } from 'vitest';
import { apiJob } from '../src/api/jobs.js';

/** Work that waits for `finish`, ignoring its signal (it is past the point where a cancel could stop it). */
function committedWork() {
  let finish!: (ok: boolean) => void;
  const decided = new Promise<boolean>((r) => (finish = r));
  const work = async () => {
    if (await decided) return { result: 'written' };
    throw Object.assign(new Error('verify found a damaged chunk'), { code: 'CORRUPT' });
  };
  return { work, finish };
}

const outcome = (p: Promise<unknown>) => p.then(
  (r) => ['ok', r],
  (e: { code?: string }) => ['failed', e.code],
);

describe('apiJob: the work\'s outcome is the job\'s', () => {
  it('a cancel that comes after the work committed does not change how the job ends (reset-state: its writes stand)', async () => {
    const ok = committedWork();
    const job = apiJob({ kind: 'reset-state' }, ok.work);
    job.cancel('too late');
    ok.finish(true);
    expect(await outcome(job.outcome)).toEqual(['ok', { result: 'written', error: undefined }]);
    const bad = committedWork();
    const failing = apiJob({ kind: 'reset-state' }, bad.work);
    failing.cancel('too late');
    bad.finish(false);
    expect(await outcome(failing.outcome)).toEqual(['failed', 'CORRUPT']);
  });

  it('a verify that resolves after a cancel ends with its report (a resolved verify checked everything)', async () => {
    const ok = committedWork();
    const job = apiJob({ kind: 'verify' }, ok.work);
    job.cancel('stop');
    ok.finish(true);
    expect(await outcome(job.outcome)).toEqual(['ok', { result: 'written', error: undefined }]);
  });

  it('work that stops at the cancel ends cancelled', async () => {
    const job = apiJob({ kind: 'gc' }, (signal) => new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason))));
    job.cancel('stop');
    expect(await outcome(job.outcome)).toEqual(['failed', 'CANCELLED']);
  });
});
