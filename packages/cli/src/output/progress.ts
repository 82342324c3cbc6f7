import cliProgress from 'cli-progress';
import { formatBytes } from './units.js';

/** Reports the progress of one long job on stderr. */
export interface ProgressReporter {
  /** Latest bytes done of total (logical bytes). Cheap; call as often as events come. */
  update(done: number, total: number): void;
  /** Ends the report (final line or bar). Idempotent. */
  stop(): void;
}

/** Interval between plain progress lines when stderr is not a terminal, ms. */
const LINE_INTERVAL_MS = 2000;

/**
 * A progress bar (cli-progress) when stderr is a TTY, otherwise a plain line such as
 * `backup: 48.0 MiB / 64.0 MiB (75%)` at most every 2 s and once at the end. Nothing with `quiet`.
 */
export function progressReporter(label: string, options: { quiet?: boolean } = {}): ProgressReporter {
  if (options.quiet) return { update: () => {}, stop: () => {} };
  if (process.stderr.isTTY) return barReporter(label);
  return lineReporter(label);
}

function barReporter(label: string): ProgressReporter {
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {doneText} / {totalText} | eta {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: false,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  let stopped = false;
  return {
    update(done, total) {
      if (stopped) return;
      const payload = { doneText: formatBytes(done), totalText: formatBytes(total) };
      if (!started) (bar.start(Math.max(total, 1), done, payload), (started = true));
      else (bar.setTotal(Math.max(total, 1)), bar.update(done, payload));
    },
    stop() {
      if (stopped) return;
      stopped = true;
      if (started) bar.stop();
    },
  };
}

/**
 * The plain lines: the first report at once, then at most one per LINE_INTERVAL_MS, and at `stop`
 * the latest report unless that very line is the last one printed (a job whose first report is
 * already its end, or whose last report came in just after a line: one final line, not two).
 */
function lineReporter(label: string): ProgressReporter {
  let last = 0;
  let latest: string | undefined;
  let printed: string | undefined;
  let stopped = false;
  const line = (done: number, total: number): string => {
    const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
    return `${label}: ${formatBytes(done)} / ${formatBytes(total)} (${pct}%)`;
  };
  const print = (text: string) => {
    printed = text;
    process.stderr.write(`${text}\n`);
  };
  return {
    update(done, total) {
      if (stopped) return;
      latest = line(done, total);
      const now = Date.now();
      if (now - last >= LINE_INTERVAL_MS) {
        last = now;
        print(latest);
      }
    },
    stop() {
      if (stopped) return;
      stopped = true;
      if (latest !== undefined && latest !== printed) print(latest);
    },
  };
}
