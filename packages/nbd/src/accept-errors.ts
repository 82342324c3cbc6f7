import { CairnError } from '@cairn/core';

/** Reports at most one accept failure per this many ms (see `AcceptErrorReporter`). */
const REPORT_INTERVAL_MS = 1000;

/**
 * Turns the errors a listening net.Server emits after `listen` (a failed accept(): EMFILE or
 * ENFILE when out of file descriptors, ENOBUFS, ENOMEM, …) into reports instead of a crash: the
 * server keeps listening, and accepts again once the cause is gone (descriptors were freed).
 *
 * Each report is `UNAVAILABLE` ("accept failed: …", `cause` the system error, `details.syscall`,
 * `details.errno` its code, `details.count` the failures it stands for). While the cause lasts,
 * libuv may retry on every turn of the event loop, so reports are rate-limited: the first failure
 * is reported at once, later ones at most once per `intervalMs`, each counting the failures since
 * the previous report (failures that stop inside an interval are counted in no report).
 */
export class AcceptErrorReporter {
  private lastReportAt = -Infinity;
  private unreported = 0;

  constructor(
    private readonly report: (err: CairnError) => void,
    private readonly driver: string,
    private readonly intervalMs = REPORT_INTERVAL_MS,
    /** Milliseconds on a monotonic clock: a wall clock set back would silence reports for as long. */
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The net.Server 'error' listener. Never throws: a throwing `report` is ignored. */
  readonly onError = (err: NodeJS.ErrnoException): void => {
    this.unreported++;
    const at = this.now();
    if (at - this.lastReportAt < this.intervalMs) return;
    this.lastReportAt = at;
    const count = this.unreported;
    this.unreported = 0;
    const error = new CairnError('UNAVAILABLE', `accept failed: ${err.message}; the server keeps listening`, {
      driver: this.driver,
      cause: err,
      details: { syscall: err.syscall ?? 'accept', errno: err.code, count },
    });
    try {
      this.report(error);
    } catch {
      // A failing reporter must not turn a survivable accept error into a crash.
    }
  };
}
