import { CairnError, cancelledError } from '../errors.js';

/** Identifies one job's wait in a DataJobLimit (`take`, `position`). Compared by identity. */
export type DataJobTicket = object;

interface Waiter {
  ticket: DataJobTicket;
  grant: (release: () => void) => void;
}

/**
 * The places of one manager's backups and restores ("data jobs"), of which at most `limit` run
 * at once (0: no limit), as Cinder's `backup_max_operations` (BackupManagerOptions.maxDataJobs):
 * each holds a read arena, worker time and store connections, so a client starting hundreds must
 * not have them all run. One more is not refused: it waits in line, first come first served (in
 * the order the jobs come to wait), and runs once a place is free. A job takes its place once it
 * holds its volume's lock (runBackup, runRestore), before it touches anything.
 */
export class DataJobLimit {
  /** Jobs waiting for a place, first in line first. */
  private readonly line: Waiter[] = [];
  private holders = 0;

  /** `limit`: places, a whole number; 0 for no limit. `INVALID_INPUT` (`details.field` `maxDataJobs`) otherwise. */
  constructor(readonly limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new CairnError('INVALID_INPUT', `maxDataJobs must be a whole number, 0 for no limit, not ${String(limit)}`, { details: { field: 'maxDataJobs' } });
    }
  }

  /**
   * Resolves with the idempotent release of a place once one is `ticket`'s: at once while fewer
   * than `limit` are taken and no one waits, else in its turn. When `signal` fires while it waits
   * (or has fired), it leaves the line and rejects at once with `CANCELLED` (the signal's reason
   * when that is one), delaying no one behind it.
   */
  take(ticket: DataJobTicket, signal: AbortSignal): Promise<() => void> {
    if (signal.aborted) return Promise.reject(cancelledError(signal, { message: WAIT_CANCELLED }));
    if (this.limit === 0 || (this.holders < this.limit && this.line.length === 0)) {
      this.holders++;
      return Promise.resolve(this.release());
    }
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const at = this.line.indexOf(waiter);
        if (at >= 0) this.line.splice(at, 1);
        reject(cancelledError(signal, { message: WAIT_CANCELLED }));
      };
      const waiter: Waiter = {
        ticket,
        grant: (release) => {
          signal.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      this.line.push(waiter);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** `ticket`'s place in line while it waits (1: it gets the next place), else undefined. */
  position(ticket: DataJobTicket): number | undefined {
    const at = this.line.findIndex((w) => w.ticket === ticket);
    return at < 0 ? undefined : at + 1;
  }

  /** Jobs holding a place, and jobs waiting for one. */
  get stats(): { running: number; waiting: number } {
    return { running: this.holders, waiting: this.line.length };
  }

  /** The idempotent release of one place: hands it to the first in line at once, so no later take goes ahead of the line. */
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

/** Message of the CANCELLED of a waiter whose signal fired when its reason is none already (cancelledError). */
const WAIT_CANCELLED = 'cancelled while waiting for a place among the data jobs';
