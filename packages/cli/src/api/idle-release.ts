import { releaseSharedBuffers } from '@cairn/core';

/** Seconds without a running job after which `cairn serve` releases the memory kept for reuse. */
export const IDLE_RELEASE_MS = 30_000;

/**
 * Releases what a long-running process keeps for reuse between jobs — core's pool of shared
 * buffers, up to 96 MiB, faulted in by the last backup or restore — once no job has run for
 * `afterMs`. The next job faults its buffers in again. Measured (2026-11-24, 1 GiB volume, one
 * process): RSS 172–175 MiB after a backup and a restore, 83 MiB within 5 s of the release (the
 * garbage collector returns the buffers), and a CBT incremental right after took 121–137 ms.
 */
export class IdleRelease {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly afterMs: number,
    /** True while no job runs. */
    private readonly isIdle: () => boolean,
    private readonly release: () => unknown = releaseSharedBuffers,
  ) {}

  /** The last running job ended: release after `afterMs` unless a job runs then. */
  idle(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (this.isIdle()) this.release();
    }, this.afterMs);
    this.timer.unref(); // never what keeps the process alive
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}
