import type { RecoveryReport } from '@cairn/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PeriodicRecovery } from '../src/api/periodic-recovery.js';

// PeriodicRecovery's callbacks come from the server (printing to stdout/stderr, which can fail):
// a throw of onReport or onError must be reported, never become an unhandled rejection (which
// ends the server under Node's default mode), and never stop the schedule.

const report = (): RecoveryReport => ({ failedBackups: [], restoredBackups: [], resumedDeletes: [], resetVolumes: [], errorRestoringVolumes: [], removedSnapshots: [], skipped: [], errors: [] });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('PeriodicRecovery: throwing callbacks', () => {
  const unhandled: unknown[] = [];
  const warnings: Error[] = [];
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
  const onWarning = (w: Error): void => void warnings.push(w);
  let recovery: PeriodicRecovery | undefined;
  beforeEach(() => {
    unhandled.length = 0;
    warnings.length = 0;
    process.on('unhandledRejection', onUnhandled);
    process.on('warning', onWarning);
  });
  afterEach(async () => {
    await recovery?.stop();
    process.off('unhandledRejection', onUnhandled);
    process.off('warning', onWarning);
  });

  /** Starts a recovery every 10 ms whose callbacks are `callbacks`; resolves once `runs` recoveries ran, plus a little for rejections to surface. */
  const runFor = async (runs: number, callbacks: Pick<ConstructorParameters<typeof PeriodicRecovery>[0], 'onReport' | 'onError'>): Promise<void> => {
    let count = 0;
    let done!: () => void;
    const enough = new Promise<void>((r) => (done = r));
    recovery = new PeriodicRecovery({
      intervalMs: 10,
      recover: async () => {
        if (++count === runs) done();
        return report();
      },
      ...callbacks,
    });
    recovery.start();
    await enough;
    await recovery.stop();
    await sleep(50); // unhandled rejections are told after the microtasks drain
  };

  it('an onReport that throws has its error passed to onError; the runs go on and nothing is unhandled', async () => {
    const errors: unknown[] = [];
    await runFor(3, {
      onReport: () => {
        throw new Error('stdout closed');
      },
      onError: (err) => errors.push(err),
    });
    expect(unhandled).toEqual([]);
    expect(errors.length).toBeGreaterThanOrEqual(2);
    expect(errors.every((e) => (e as Error).message === 'stdout closed')).toBe(true);
  });

  it('an onError that throws is reported as a process warning; the runs go on and nothing is unhandled', async () => {
    await runFor(3, {
      onReport: () => {
        throw new Error('stdout closed');
      },
      onError: () => {
        throw new Error('stderr closed');
      },
    });
    expect(unhandled).toEqual([]);
    expect(warnings.length).toBeGreaterThanOrEqual(2);
    expect(warnings[0]!.message).toContain('stderr closed');
  });
});
