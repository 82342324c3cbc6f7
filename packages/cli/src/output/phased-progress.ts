import { progressReporter } from './progress.js';

/** A progress report in phases: each phase gets its own reporter, labelled `<label>: <phase>`. */
export interface PhasedProgress {
  /** Latest bytes done of total in `phase`; a new phase ends the previous one's report (its final line). */
  update(done: number, total: number, phase: string): void;
  /** Ends the current phase's report. Idempotent. */
  stop(): void;
}

/** progressReporter per phase: on a terminal a bar each, otherwise lines such as `export: write: 8.0 MiB / 12.0 MiB (66%)`. Nothing with `quiet`. */
export function phasedProgress(label: string, options: { quiet?: boolean } = {}): PhasedProgress {
  let current: { phase: string; reporter: ReturnType<typeof progressReporter> } | undefined;
  return {
    update(done, total, phase) {
      if (current?.phase !== phase) {
        current?.reporter.stop();
        current = { phase, reporter: progressReporter(`${label}: ${phase}`, options) };
      }
      current.reporter.update(done, total);
    },
    stop() {
      current?.reporter.stop();
    },
  };
}
