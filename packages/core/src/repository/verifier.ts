import type { VerifyOptions, VerifyProblem, VerifyReport } from '../contracts/backup-service.js';
import { CairnError, isCairnError } from '../errors.js';
import { fetchChunks } from './chunk-fetcher.js';
import { chunkLength } from './chunk-plan.js';
import type { Repository } from './repository.js';

/**
 * Reads and checks every chunk the given backups use (all backups when `backupIds` is omitted),
 * each chunk once, and reports which backups a bad or missing chunk, chunk list page or manifest
 * breaks (one problem per backup, in the order given). A chunk is also bad when its length is
 * not the length of the place it fills (every chunk is chunkSize bytes but a short last one).
 * Progress: plaintext bytes of the distinct
 * chunks checked, out of those the index lists (chunks it does not list are missing: they count
 * in neither).
 */
export async function verifyBackups(repo: Repository, backupIds?: string[], options: VerifyOptions = {}): Promise<VerifyReport> {
  const { signal, progress } = options;
  await repo.index.refresh();
  const ids = backupIds ?? (await repo.listBackupIds());
  const report: VerifyReport = { checked: [], problems: [], bytesChecked: 0 };
  const users = new Map<string, string[]>();
  /** Plaintext length each chunk's places need (one per id: a chunk that two lengths need is bad). */
  const lengths = new Map<string, number>();
  const bad = new Map<string, CairnError>();
  // One problem per backup: a manifest's or page's first, then its chunks'.
  const perBackup = new Map<string, VerifyProblem>();
  for (const backupId of ids) {
    report.checked.push(backupId);
    // A manifest or chunk list page that cannot be read breaks the backup; its chunks read so
    // far are still checked.
    try {
      const m = await repo.readManifest(backupId);
      for (let k = 0; k < m.chunks.pageCount; k++) {
        const page = await m.chunks.page(k);
        for (let j = 0; j < page.length; j++) {
          const id = page.get(j);
          if (id === null) continue;
          const list = users.get(id);
          if (!list) users.set(id, [backupId]);
          else if (list[list.length - 1] !== backupId) list.push(backupId);
          const want = chunkLength(m.size, m.chunkSize, k * m.chunks.pageChunks + j);
          const had = lengths.get(id);
          if (had === undefined) lengths.set(id, want);
          else if (had !== want && !bad.has(id)) bad.set(id, new CairnError('CORRUPT', `chunk ${id} fills places of ${had} and of ${want} bytes`, { details: { chunk: id } }));
        }
      }
    } catch (err) {
      if (!isCairnError(err) || (err.code !== 'CORRUPT' && err.code !== 'NOT_FOUND')) throw err;
      perBackup.set(backupId, { backupId, code: err.code, message: err.message });
    }
  }
  for (const [id, want] of lengths) {
    const have = repo.index.get(id)?.rawLength;
    if (have !== undefined && have !== want && !bad.has(id)) bad.set(id, new CairnError('CORRUPT', `chunk ${id} has ${have} bytes where ${want} belong`, { details: { chunk: id } }));
  }
  let total = 0;
  for (const id of users.keys()) total += repo.index.get(id)?.rawLength ?? 0;
  progress?.(0, total);
  await fetchChunks(
    repo,
    users.keys(),
    async (chunks) => {
      for (const c of chunks) report.bytesChecked += c.data.length;
      progress?.(report.bytesChecked, total);
    },
    { signal, once: true, onError: (id, err) => bad.set(id, err) },
  );
  for (const [chunk, err] of bad) {
    for (const backupId of users.get(chunk) ?? []) {
      const p = perBackup.get(backupId);
      if (p) {
        p.message += `; chunk ${chunk}: ${err.message}`;
        if (err.code === 'CORRUPT') p.code = 'CORRUPT';
      } else {
        perBackup.set(backupId, { backupId, code: err.code === 'NOT_FOUND' ? 'NOT_FOUND' : 'CORRUPT', message: `chunk ${chunk}: ${err.message}` });
      }
    }
  }
  // A chunk "in no pack" is most often a pack whose index object cannot be read: say which.
  if (repo.index.damaged.size > 0) {
    const damaged = [...repo.index.damaged].map((id) => `index/${id}`).join(', ');
    for (const p of perBackup.values()) if (p.code === 'NOT_FOUND') p.message += ` (unreadable index objects: ${damaged})`;
  }
  report.problems.push(...[...new Set(ids)].filter((id) => perBackup.has(id)).map((id) => perBackup.get(id)!));
  return report;
}
