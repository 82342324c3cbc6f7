/**
 * `npm run bench:catalog [-- --records 100,1000,5000] [--volumes 20]`: how the repository catalog's
 * lookups grow with the number of backup records, on a posix repository (encrypted, as in
 * `npm run bench`): the newest available backup of a volume (what every incremental asks for),
 * one volume's listing, and the listing of every record. Prints a table of milliseconds (best of 3).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChunkedBackupService, Repository, RepositoryCatalog } from '@cairn/core';
import { PosixObjectStore } from '@cairn/backup-posix';
import { option as opt } from './lib/args.mjs';

const counts = opt('--records', '100,1000,5000').split(',').map(Number);
const volumes = Number(opt('--volumes', '20'));

const best = async (fn) => {
  let ms = Infinity;
  for (let k = 0; k < 3; k++) {
    const t = performance.now();
    await fn();
    ms = Math.min(ms, performance.now() - t);
  }
  return ms.toFixed(1);
};

console.log(`| records | volumes | newest available backup of a volume | one volume's records | every record |`);
console.log('|---|---|---|---|---|');
for (const n of counts) {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-catalog-'));
  try {
    const store = await PosixObjectStore.open({ directory: dir });
    await Repository.init(store, { passphrase: 'bench', kdf: { N: 1024, r: 8, p: 1 } });
    const service = await ChunkedBackupService.open(store, { name: 'posix', passphrase: 'bench' });
    const catalog = new RepositoryCatalog(service.repository);
    const day = Date.UTC(2026, 0, 1);
    for (let i = 0; i < n; i++) {
      const at = new Date(day + i * 60_000).toISOString();
      await catalog.putBackup({
        id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
        name: '', description: '', volumeId: `volume-${i % volumes}`, volumeName: 'disk', size: 2 ** 31,
        status: 'available', service: 'posix', incremental: i >= volumes, volumeMetadata: {},
        serviceData: { repository: service.repository.config.id, manifest: 'manifests/x' },
        stats: { bytesRead: 1, bytesNew: 1, bytesReused: 1, bytesStored: 1, durationMs: 1 }, createdAt: at, updatedAt: at,
      });
    }
    const latest = await best(() => catalog.latestBackup({ volumeId: 'volume-3', status: 'available', service: 'posix' }));
    const one = await best(() => catalog.listBackups({ volumeId: 'volume-3' }));
    const all = await best(() => catalog.listBackups());
    console.log(`| ${n} | ${volumes} | ${latest} ms | ${one} ms | ${all} ms |`);
    await service.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
