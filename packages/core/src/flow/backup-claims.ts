import type { Catalog, SectionOptions } from '../contracts/catalog.js';
import { newId } from '../util/clock.js';
import { KeyedMutex } from '../util/keyed-mutex.js';

/** How a running flow uses an existing backup: reads it (`restore`, and BackupManager.readBackup) or builds on it (`parent`). */
export type BackupUse = 'restore' | 'parent';

/**
 * Drops one claim; `last` runs (in `exclusive`) when it was the final claim of its kind.
 * Idempotent. The claim is dropped even when the section cannot be taken: the release then
 * rejects with that error, `last` not run.
 */
export type ReleaseClaim = (last?: () => Promise<void>) => Promise<void>;

/**
 * The manager's running flows' claims on existing backups, per backup (the counts are
 * in-process, like InProcessVolumeLocks). A restore reading a backup (or a readBackup), or a backup
 * building on it as its parent, claims it for as long as it runs; the manager refuses to delete a claimed backup.
 * Other managers and processes see restore claims as the record's `restoring` status and its
 * `readers`, this manager's entry named `readerId` (backup-readers.ts: restores of a backup by
 * several processes run at once, and it is `available` again after the last), and a parent claim
 * as the child's `creating` record naming the parent (written in the parent's section).
 *
 * Every status change of one backup runs in `exclusive` (a claim's check, its last release, a
 * delete's checks and its move to `deleting`), and so does every removal of its record (a
 * delete's last step, an import's withdrawn claim), so a check and the write that follows it see
 * no other change of that backup in between, by this process or any other sharing the catalog,
 * and a write made in a section never brings back a record removed since its read. Sections of one backup never nest; a section of a
 * parent may run sections of its children (cascade delete), never the reverse.
 */
export class BackupClaims {
  private readonly mutex = new KeyedMutex();
  private readonly held = new Map<string, Record<BackupUse, number>>();
  /** This manager's entry in the `readers` of the records it restores or reads (BackupRecord.readers). */
  readonly readerId = newId();

  constructor(private readonly catalog: Pick<Catalog, 'section'>) {}

  /**
   * Runs `fn` alone on `backupId`: no other section of this manager runs on it meanwhile, and
   * (through the catalog's `section`) none of any process sharing the catalog.
   */
  exclusive<T>(backupId: string, fn: () => Promise<T>, signal?: AbortSignal, options?: SectionOptions): Promise<T> {
    return this.mutex.run(`backup:${backupId}`, () => this.catalog.section(backupId, fn, signal, options), signal);
  }

  /** How many running flows use `backupId` that way. */
  count(backupId: string, use: BackupUse): number {
    return this.held.get(backupId)?.[use] ?? 0;
  }

  /**
   * In `exclusive`: runs `check` with the number of `use` claims already held, and takes one
   * more when it returns true. Resolves to the release, or to undefined when `check` returned
   * false; a `check` that throws refuses the claim with its error. `signal` ends a wait for the
   * section with `CANCELLED` (the release waits: it must run).
   */
  async claim(backupId: string, use: BackupUse, check: (held: number) => Promise<boolean>, signal?: AbortSignal): Promise<ReleaseClaim | undefined> {
    const taken = await this.exclusive(backupId, async () => {
      if (!(await check(this.count(backupId, use)))) return false;
      const counts = this.held.get(backupId) ?? { restore: 0, parent: 0 };
      counts[use]++;
      this.held.set(backupId, counts);
      return true;
    }, signal);
    if (!taken) return undefined;
    let released = false;
    const drop = (): boolean => {
      const counts = this.held.get(backupId)!;
      counts[use]--;
      if (counts.restore === 0 && counts.parent === 0) this.held.delete(backupId);
      return counts[use] === 0;
    };
    return async (last) => {
      if (released) return;
      released = true;
      // Only a release that writes the record (`last`: a restore's end) needs the catalog's
      // section; dropping a count is this process's business, and must not wait for another
      // process's section (a cancelled job would wait with it).
      if (!last) return void (await this.mutex.run(`backup:${backupId}`, async () => drop()));
      // The count drops whatever becomes of the section: in it when it is taken (`last` then sees
      // the count already dropped), else once taking it failed (the section's error is the
      // release's). A count kept would refuse the backup's delete and reset for the life of the
      // process, and a retry is a no-op. `last` is then not run: the record keeps what it says
      // (a restore's `restoring`, this manager among its readers) until a later claim's release or
      // a reset ends it.
      let dropped = false;
      await this.mutex.run(`backup:${backupId}`, async () => {
        try {
          await this.catalog.section(backupId, async () => {
            dropped = true;
            if (drop()) await last();
          });
        } finally {
          if (!dropped) drop();
        }
      });
    };
  }
}
