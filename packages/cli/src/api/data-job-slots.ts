import { AsyncLocalStorage } from 'node:async_hooks';
import { CairnError, InProcessVolumeLocks, isCairnError, type VolumeLocks } from '@cairn/core';

/** Default `limit` (`cairn serve --max-data-jobs`). */
export const DEFAULT_MAX_DATA_JOBS = 4;

/** Identifies one job to DataJobSlots (`run`), so that its place in line can be shown (`position`). Compared by identity. */
export class DataJobTicket {}

interface Waiter {
  ticket: DataJobTicket | undefined;
  grant: (release: () => void) => void;
}

/**
 * The places of a server's backups and restores ("data jobs"), of which at most `limit` run at
 * once (0: no limit), as Cinder's `backup_max_operations`: each holds a read arena, worker time
 * and store connections, so a client starting hundreds must not have them all run. One more is
 * not refused: it waits in line, first come first served (in the order the jobs come to wait, which
 * for jobs the server accepted one after the other is the order it accepted them: a job comes to
 * wait within microtasks of its start, with no I/O between), and runs once a place is free.
 *
 * The place is taken where the manager's job already waits before it touches anything: for its
 * volume's lock (`volumeLocks` wraps the manager's VolumeLocks, so the job holds its volume's
 * lock, then waits for a place). A waiting job is thus exactly a job queued behind another flow of
 * its volume (core's BackupManager contract): its backup record is `creating` (a restore's backup
 * claimed, its new volume created), the volume has no flow state yet, a cancel ends it at once
 * with `CANCELLED` having touched neither the volume nor the backup's data, and a server that dies
 * meanwhile leaves what recover() already resolves. (Core's manager is the natural home of this
 * limit, as a `maxDataJobs` option acquired in runBackup/runRestore; until it has one, the API
 * layer adds it through the locks it hands the manager.)
 *
 * Which job waits: a job is started inside `run(ticket, …)`; its acquire, made in that call's
 * asynchronous context (AsyncLocalStorage), is filed under the ticket, so `position(ticket)` can
 * tell the job view. An acquire made outside any `run` takes a place all the same.
 */
export class DataJobSlots {
  private readonly bound = new AsyncLocalStorage<DataJobTicket>();
  /** Jobs waiting for a place, first in line first. */
  private readonly line: Waiter[] = [];
  private holders = 0;

  /** `limit`: places, a whole number; 0 for no limit. */
  constructor(readonly limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 0) throw new CairnError('INVALID_INPUT', `the limit of data jobs must be a whole number, 0 for none, not ${String(limit)}`);
  }

  /** A new ticket, for one job. */
  ticket(): DataJobTicket {
    return new DataJobTicket();
  }

  /** Runs `start`, so that the place the job it starts waits for is filed under `ticket`. */
  run<T>(ticket: DataJobTicket, start: () => T): T {
    return this.bound.run(ticket, start);
  }

  /** The job's place in line while it waits for a place (1: it gets the next one), else undefined. */
  position(ticket: DataJobTicket): number | undefined {
    const at = this.line.findIndex((w) => w.ticket === ticket);
    return at < 0 ? undefined : at + 1;
  }

  /** Jobs holding a place, and jobs waiting for one. */
  get stats(): { running: number; waiting: number } {
    return { running: this.holders, waiting: this.line.length };
  }

  /**
   * `inner` (default: in-process locks) with a place taken after the volume's lock: an acquire
   * resolves once it holds both, and its release gives both back. An acquire whose `signal` fires
   * while it waits for the place leaves the line, releases the volume's lock and rejects with
   * `CANCELLED` (the signal's reason when that is one), as VolumeLocks requires.
   */
  volumeLocks(inner: VolumeLocks = new InProcessVolumeLocks()): VolumeLocks {
    return {
      acquire: async (volumeId, signal) => {
        const ticket = this.bound.getStore();
        const releaseLock = await inner.acquire(volumeId, signal);
        let releasePlace: () => void;
        try {
          releasePlace = await this.take(ticket, signal);
        } catch (err) {
          await releaseLock();
          throw err;
        }
        let released = false;
        return async () => {
          if (released) return;
          released = true;
          releasePlace();
          await releaseLock();
        };
      },
    };
  }

  /** Resolves with the release of a place once one is this caller's; see `volumeLocks`. */
  private take(ticket: DataJobTicket | undefined, signal: AbortSignal | undefined): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(cancelled(signal));
    if (this.limit === 0 || (this.holders < this.limit && this.line.length === 0)) {
      this.holders++;
      return Promise.resolve(this.release());
    }
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const at = this.line.indexOf(waiter);
        if (at >= 0) this.line.splice(at, 1);
        reject(cancelled(signal!));
      };
      const waiter: Waiter = {
        ticket,
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      this.line.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The idempotent release of one place: hands it to the first in line, at once (so no later acquire goes ahead of the line). */
  private release(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.holders--;
      while (this.line.length > 0 && (this.limit === 0 || this.holders < this.limit)) {
        this.holders++;
        this.line.shift()!.grant(this.release());
      }
    };
  }
}

/** CANCELLED for a waiter whose signal fired: the signal's reason when that is one already. */
function cancelled(signal: AbortSignal): CairnError {
  const reason: unknown = signal.reason;
  return isCairnError(reason) && reason.code === 'CANCELLED' ? reason : new CairnError('CANCELLED', 'cancelled while waiting for a place among the data jobs', { cause: reason });
}
