import type { VerifyOptions, VerifyProblem, VerifyReport } from '../contracts/backup-service.js';
import { CairnError, isCairnError, throwIfAborted } from '../errors.js';
import { untilAborted } from '../util/until-aborted.js';
import { fetchChunks } from './chunk-fetcher.js';
import { ChunkIdSet } from './chunk-id-set.js';
import { chunkLength } from './chunk-plan.js';
import { FETCH_BATCH } from './fetch-batches.js';
import { manifestGone } from './manifest-gone.js';
import type { Repository } from './repository.js';

/**
 * Reads and checks every chunk the given backups use (all backups when `backupIds` is omitted),
 * each chunk once, and reports which backups a bad or missing chunk, chunk list page or manifest
 * breaks (one problem per backup, in the order given; a backup named twice is checked and
 * reported once), each with structured `details` beside its message (VerifyProblemDetails: the
 * first chunk of each kind and counts, never lists). With `backupIds` omitted, index objects
 * that cannot be read and break no backup are reported too, after them, one problem each with no
 * backupId (VerifyProblem), and so are copies of chunks that failed their checks or are gone while
 * another copy of the chunk read well (the chunk breaks no backup: readers fall back to the
 * other copy; fetchChunks). A backup is also broken when it puts a chunk at a place of another
 * length (every chunk is chunkSize bytes but a short last one): that backup only, not the others
 * that hold the chunk where its length belongs. With `backupIds` omitted, a listed backup whose
 * manifest or page is `NOT_FOUND` because it was deleted since the listing (deletes take no lock:
 * its manifest is gone, manifestGone) is neither in `checked` nor reported; one named in
 * `backupIds` that has no manifest is reported (`NOT_FOUND`).
 * Progress: plaintext bytes of the distinct chunks checked, out of those the index lists (chunks
 * it does not list are missing: they count in neither).
 *
 * Memory: the distinct chunk ids as a ChunkIdSet (40–56 bytes each), the bad ones with their
 * errors, and one fetch batch. Manifests and pages are walked once to collect the ids, and again
 * only when a chunk is bad, to name the backups it breaks.
 */
export async function verifyBackups(repo: Repository, backupIds?: string[], options: VerifyOptions = {}): Promise<VerifyReport> {
  const { signal, progress } = options;
  await repo.index.refresh({ signal }); // a cancel ends the index load too (ChunkIndex.refresh)
  const ids = [...new Set(backupIds ?? (await untilAborted(repo.listBackupIds({ signal }), signal)))]; // each backup checked and reported once
  const report: VerifyReport = { checked: [], problems: [], bytesChecked: 0 };
  const wanted = new ChunkIdSet();
  const bad = new Map<string, CairnError>();
  /** Copies that failed while another copy of their chunk was tried, per chunk, with their packs. */
  const failedCopies = new Map<string, { pack: string; err: CairnError }[]>();
  // One problem per backup: a manifest's or page's first, then its chunks'.
  const perBackup = new Map<string, VerifyProblem>();
  let total = 0;
  for (const backupId of ids) {
    report.checked.push(backupId);
    // A chunk whose length is not that of a place this backup puts it in breaks this backup only
    // (the chunk itself may be whole, and fill its place in another backup). The report names the
    // first such place and counts the rest, so its message stays short however many there are.
    let misplaced: string | undefined;
    let misplacedCount = 0;
    let first: NonNullable<VerifyProblem['details']>['misplacedChunk'];
    // A manifest or chunk list page that cannot be read breaks the backup; its chunks read so
    // far are still checked.
    const failure = await walkChunks(repo, backupId, signal, (id, want, offset) => {
      const have = repo.index.get(id)?.rawLength;
      if (wanted.add(id)) total += have ?? 0;
      if (have === undefined || have === want) return;
      misplacedCount += 1;
      misplaced ??= `chunk ${id} at byte ${offset} of the volume has ${have} bytes where ${want} belong`;
      first ??= { chunkId: id, offset, expectedLength: want, actualLength: have, count: 0 };
    });
    if (failure?.code === 'NOT_FOUND' && !backupIds && (await manifestGone(repo, backupId))) {
      report.checked.pop(); // deleted since the listing: there is nothing left to check
      continue;
    }
    const more = misplacedCount > 1 ? ` (and ${misplacedCount - 1} more chunk places of the wrong length)` : '';
    const messages = [...(failure ? [failure.message] : []), ...(misplaced ? [misplaced + more] : [])];
    if (messages.length > 0) {
      perBackup.set(backupId, { backupId, code: misplaced ? 'CORRUPT' : failure!.code, message: messages.join('; '), ...(first ? { details: { misplacedChunk: { ...first, count: misplacedCount } } } : {}) });
    }
  }
  progress?.(0, total);
  for (let at = 0; at < wanted.size; at += FETCH_BATCH) {
    await fetchChunks(
      repo,
      wanted.slice(at, at + FETCH_BATCH),
      async (chunks) => {
        for (const c of chunks) report.bytesChecked += c.data.length;
        progress?.(report.bytesChecked, total);
      },
      {
        signal,
        once: true,
        onError: (id, err) => bad.set(id, err),
        onCopyFailed: (copy, err) => failedCopies.set(copy.id, [...(failedCopies.get(copy.id) ?? []), { pack: copy.pack, err: new CairnError(err.code, `its copy in pack ${copy.pack} at ${copy.offset}: ${err.message}`, { cause: err }) }]),
      },
    );
  }
  // The backups each bad chunk breaks, in the order their chunks come (walked again: only now is
  // it known which chunks to look for).
  if (bad.size > 0) {
    for (const backupId of report.checked) {
      const named = new Set<string>();
      await walkChunks(repo, backupId, signal, (id) => {
        const err = bad.get(id);
        if (!err || named.has(id)) return;
        named.add(id);
        let p = perBackup.get(backupId);
        if (p) {
          p.message += `; ${chunkProblem(id, err)}`;
          if (err.code === 'CORRUPT') p.code = 'CORRUPT';
        } else {
          p = { backupId, code: err.code === 'NOT_FOUND' ? 'NOT_FOUND' : 'CORRUPT', message: chunkProblem(id, err) };
          perBackup.set(backupId, p);
        }
        const details = (p.details ??= {});
        if (details.badChunk) details.badChunk.count++;
        else details.badChunk = { chunkId: id, ...withPack(repo.index.get(id)?.pack), count: 1 };
      });
    }
  }
  // A chunk "in no pack" is most often a pack whose index object cannot be read: say which.
  let damagedNamed = false;
  if (repo.index.damaged.size > 0) {
    const damaged = [...repo.index.damaged].map((id) => `index/${id}`).join(', ');
    for (const p of perBackup.values()) {
      if (p.code !== 'NOT_FOUND') continue;
      p.message += ` (unreadable index objects: ${damaged}; delete them from the store, and the next GC names again, from their own trailers, the packs they named that hold chunks a backup uses)`;
      damagedNamed = true;
    }
  }
  report.problems.push(...report.checked.filter((id) => perBackup.has(id)).map((id) => perBackup.get(id)!));
  // A verify of the whole repository names every unreadable index object (GC refuses to run over
  // one and sends its caller here): in the problems of the backups it may break, or, when it
  // breaks none, as a problem of its own, without a backupId.
  if (!backupIds && !damagedNamed) {
    for (const id of repo.index.damaged) {
      report.problems.push({ code: 'CORRUPT', message: `index object index/${id} cannot be read; it breaks no backup, but GC refuses to run over it: delete the object index/${id} from the store, and the next GC names again, from their own trailers, the packs it named that hold chunks a backup uses`, details: { indexObject: id } });
    }
  }
  // A damaged copy that another copy stands in for breaks no backup, but every read of the chunk
  // tries it first: a verify of the whole repository names it.
  if (!backupIds) {
    for (const [id, copies] of failedCopies) {
      if (bad.has(id)) continue; // no copy read well: the backups' problems name the chunk
      const code = copies.every((c) => c.err.code === 'NOT_FOUND') ? 'NOT_FOUND' : 'CORRUPT';
      report.problems.push({ code, message: `chunk ${id} breaks no backup (another copy reads well), but readers try first ${copies.map((c) => c.err.message).join('; ')}`, details: { damagedCopy: { chunkId: id, packs: copies.map((c) => c.pack) } } });
    }
  }
  return report;
}

/**
 * A bad chunk's part of a problem's message, naming the chunk once: the read's message when it
 * already begins with `chunk <id> ` (`chunk <id> is damaged: …`, `chunk <id> is in no pack`),
 * else `chunk <id>: <message>`.
 */
function chunkProblem(id: string, err: Error): string {
  return err.message.startsWith(`chunk ${id} `) ? err.message : `chunk ${id}: ${err.message}`;
}

/**
 * Calls `visit` with the id, place length and place offset (bytes into the volume) of every
 * non-zero chunk of a backup, in chunk order. Returns the `CORRUPT` or `NOT_FOUND` error of a
 * manifest or chunk list page that cannot be read (the chunks before it were visited); any other
 * error is thrown. The manifest is the walk's own, so its reads and its pages' take `signal`
 * (`CANCELLED` at once when it aborts).
 */
async function walkChunks(repo: Repository, backupId: string, signal: AbortSignal | undefined, visit: (id: string, length: number, offset: number) => void): Promise<(CairnError & { code: 'CORRUPT' | 'NOT_FOUND' }) | undefined> {
  try {
    const m = await repo.readManifest(backupId, { signal });
    for (let k = 0; k < m.chunks.pageCount; k++) {
      throwIfAborted(signal);
      const page = await m.chunks.page(k);
      for (let j = 0; j < page.length; j++) {
        const id = page.get(j);
        const n = k * m.chunks.pageChunks + j;
        if (id !== null) visit(id, chunkLength(m.size, m.chunkSize, n), n * m.chunkSize);
      }
    }
    return undefined;
  } catch (err) {
    if (isCairnError(err) && (err.code === 'CORRUPT' || err.code === 'NOT_FOUND')) return err as CairnError & { code: 'CORRUPT' | 'NOT_FOUND' };
    throw err;
  }
}

/** `{ pack }`, or nothing when there is none (an optional field is left out, not undefined). */
function withPack(pack: string | undefined): { pack?: string } {
  return pack === undefined ? {} : { pack };
}
