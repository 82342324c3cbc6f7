import { DataJobLimit } from './data-job-limit.js';

/** Where a job waits before it runs, and its place there (Job.queued). */
export interface JobQueuePlace {
  /**
   * `volume`: behind another backup or restore of its volume that this manager runs (the job
   * waits for the volume's lock); `data-jobs`: for a place among the manager's running backups and
   * restores (BackupManagerOptions.maxDataJobs), holding its volume's lock.
   */
  waitsFor: 'volume' | 'data-jobs';
  /** 1: the job is the next to get what it waits for. */
  position: number;
}

/**
 * What one manager's backups and restores wait for before they run: their volume (behind its
 * other flows) and a place among the data jobs (DataJobLimit), and where each stands in those
 * lines, so that a job can show it (JobWait.place). A job's waits are opened when the job is
 * made, and ended once it has ended (JobWait.end).
 */
export class JobWaits {
  private readonly places: DataJobLimit;
  /** Tickets in order: a backup's taken when it is requested, any job's when it comes to wait for its volume's lock. */
  private sequence = 0;
  /** Per volume: the jobs that wait for it, and the number of this manager's jobs holding its lock. */
  private readonly volumes = new Map<string, { waiting: Set<JobWait>; held: number }>();

  /** `maxDataJobs`: as DataJobLimit's `limit` (0: no limit; `INVALID_INPUT` when not a whole number). */
  constructor(maxDataJobs: number) {
    this.places = new DataJobLimit(maxDataJobs);
  }

  /** A ticket in the order of the calls: taken synchronously when a backup is requested (RequestOrder), its place among its volume's backups waiting for their turn. */
  order(): number {
    return ++this.sequence;
  }

  /**
   * The waits of a new job on `volumeId`, which waits for its volume from now on: for its turn
   * among the volume's backup requests first when `turnOrder` (its request's `order()`) is given,
   * else for the volume's lock at once.
   */
  open(volumeId: string, turnOrder?: number): JobWait {
    let entry = this.volumes.get(volumeId);
    if (!entry) this.volumes.set(volumeId, (entry = { waiting: new Set(), held: 0 }));
    const wait = new JobWait(this, this.places, volumeId, entry, turnOrder === undefined ? { stage: 'lock', order: this.order() } : { stage: 'turn', order: turnOrder });
    entry.waiting.add(wait);
    return wait;
  }

  /** Drops `volumeId`'s entry once no job waits for or holds it. */
  forget(volumeId: string): void {
    const entry = this.volumes.get(volumeId);
    if (entry && entry.waiting.size === 0 && entry.held === 0) this.volumes.delete(volumeId);
  }
}

/** Where a job waiting for its volume stands: in the lock's line (before any turn), or waiting for its turn. */
interface VolumeStage {
  stage: 'turn' | 'lock';
  order: number;
}

/** One job's waits (JobWaits.open): its volume, then a place. */
export class JobWait {
  private volumeStage: VolumeStage | undefined;
  private holds = false;
  private releasePlace: (() => void) | undefined;
  private ended = false;

  constructor(
    private readonly owner: JobWaits,
    private readonly places: DataJobLimit,
    private readonly volumeId: string,
    private readonly volume: { waiting: Set<JobWait>; held: number },
    stage: VolumeStage,
  ) {
    this.volumeStage = stage;
  }

  /** The job's turn has come: it waits for its volume's lock now, behind those already waiting for it. */
  awaitLock(): void {
    if (this.volumeStage?.stage === 'turn') this.volumeStage = { stage: 'lock', order: this.owner.order() };
  }

  /** The job holds its volume's lock: it no longer waits for the volume, and is its holder until `end`. */
  holdVolume(): void {
    if (this.ended || this.holds) return;
    this.leaveVolumeLine();
    this.holds = true;
    this.volume.held++;
  }

  /**
   * Waits for a place among the data jobs, first come first served (DataJobLimit.take); the
   * place is the job's until `end`. Rejects with `CANCELLED` at once when `signal` fires first.
   */
  async takePlace(signal: AbortSignal): Promise<void> {
    const release = await this.places.take(this, signal);
    if (this.ended) release();
    else this.releasePlace = release;
  }

  /**
   * Where the job waits now: its volume, when another job of this manager holds the volume or
   * waits for it ahead of this one (1: it gets the volume next; the jobs waiting for the lock come
   * before those still waiting for their turn, each in the order they came to wait); a place,
   * while it waits in the data jobs' line. Undefined while it runs, and once it has ended.
   */
  place(): JobQueuePlace | undefined {
    if (this.ended) return undefined;
    const position = this.places.position(this);
    if (position !== undefined) return { waitsFor: 'data-jobs', position };
    const mine = this.volumeStage;
    if (!mine) return undefined;
    let ahead = 0;
    for (const other of this.volume.waiting) {
      const theirs = other.volumeStage;
      if (other !== this && theirs && (theirs.stage === mine.stage ? theirs.order < mine.order : theirs.stage === 'lock')) ahead++;
    }
    return ahead > 0 || this.volume.held > 0 ? { waitsFor: 'volume', position: ahead + 1 } : undefined;
  }

  /** The job has ended (or will not wait any more): leaves every line, and gives back its place and its hold of the volume. Idempotent. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.leaveVolumeLine();
    if (this.holds) {
      this.holds = false;
      this.volume.held--;
    }
    this.releasePlace?.();
    this.releasePlace = undefined;
    this.owner.forget(this.volumeId);
  }

  private leaveVolumeLine(): void {
    this.volumeStage = undefined;
    this.volume.waiting.delete(this);
  }
}
