import type { RecoveryReport } from '@cairn/core';

export interface PeriodicRecoveryOptions {
  /** Time between the end of one run and the start of the next (ms, > 0). */
  intervalMs: number;
  /**
   * One recovery: the manager's `recover()`, which leaves alone the records of other live
   * processes and those this process's flows hold (so it may run while the server's requests
   * start and run jobs), and recovers a record that one of this process's jobs left in flight.
   */
  recover: () => Promise<RecoveryReport>;
  /** Every run's report. Should it throw, its error goes to onError. */
  onReport: (report: RecoveryReport) => void;
  /**
   * A run that failed, or whose onReport threw; the next run comes as usual. Should it throw
   * itself, its error is reported as a process warning (`process.emitWarning`): no callback's
   * throw ever becomes an unhandled rejection (which would end the server) or stops the schedule.
   */
  onError: (err: unknown) => void;
}

/**
 * Re-runs recovery while the server runs, so records left `creating`, `restoring` or `deleting`
 * are resolved without restarting the server: by a process which died mid-job (a `cairn backup
 * create` killed with SIGKILL, say), or by one of the server's own jobs whose final catalog write
 * failed (see BackupManager.recover). Runs never overlap: the next is scheduled when
 * one ends. The timer never keeps the process alive. `stop` ends the schedule and waits for a
 * run in progress.
 */
export class PeriodicRecovery {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly options: PeriodicRecoveryOptions) {}

  start(): void {
    this.schedule();
  }

  /** One run now: its report; rejects when recovery fails. */
  runOnce(): Promise<RecoveryReport> {
    return this.options.recover();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = Promise.resolve()
        .then(() => this.runOnce())
        .then((report) => this.options.onReport(report))
        .catch((err: unknown) => this.options.onError(err))
        .catch((err: unknown) => process.emitWarning(`periodic recovery: its error handler threw: ${(err as Error)?.message ?? String(err)}`, { code: 'CAIRN_RECOVERY_HANDLER' }))
        .finally(() => {
          this.running = undefined;
          this.schedule();
        });
    }, this.options.intervalMs);
    this.timer.unref();
  }
}
