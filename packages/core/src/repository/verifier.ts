import type { VerifyProblem, VerifyReport } from '../contracts/backup-service.js';
import { CairnError, isCairnError } from '../errors.js';
import { fetchChunks } from './chunk-fetcher.js';
import type { Manifest } from './format.js';
import type { Repository } from './repository.js';

/**
 * Reads and checks every chunk the given backups use (all backups when `backupIds` is omitted),
 * each chunk once, and reports which backups a bad or missing chunk breaks.
 */
export async function verifyBackups(repo: Repository, backupIds?: string[], signal?: AbortSignal): Promise<VerifyReport> {
  await repo.index.refresh();
  const ids = backupIds ?? (await repo.listBackupIds());
  const report: VerifyReport = { checked: [], problems: [], bytesChecked: 0 };
  const users = new Map<string, string[]>();
  for (const backupId of ids) {
    report.checked.push(backupId);
    let m: Manifest;
    try {
      m = await repo.readManifest(backupId);
    } catch (err) {
      if (!isCairnError(err) || (err.code !== 'CORRUPT' && err.code !== 'NOT_FOUND')) throw err;
      report.problems.push({ backupId, code: err.code, message: err.message });
      continue;
    }
    for (const id of new Set(m.chunks.ids())) {
      const list = users.get(id) ?? [];
      list.push(backupId);
      users.set(id, list);
    }
  }
  const bad = new Map<string, CairnError>();
  await fetchChunks(
    repo,
    users.keys(),
    async (chunks) => {
      for (const c of chunks) report.bytesChecked += c.data.length;
    },
    { signal, once: true, onError: (id, err) => bad.set(id, err) },
  );
  const perBackup = new Map<string, VerifyProblem>();
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
  report.problems.push(...perBackup.values());
  return report;
}
