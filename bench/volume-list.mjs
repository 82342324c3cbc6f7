/**
 * `node bench/volume-list.mjs [--volumes 1000] [--latency 0]`: what `cairn volume list` (and
 * `GET /v1/volumes`) costs the catalog, BackupManager.listVolumes, on a posix repository catalog
 * (encrypted, as in `npm run bench`). Two kinds of volume: one created by `volume create` (no
 * restore job in its metadata), and one a restore to a new volume created, which keeps
 * `cairn.restore-job` after it is restored. The list reads the catalog's flow states and
 * new-volume intents once (volume-views.ts), whatever the volumes; getVolume of each volume, as the
 * list ran before, read 1 object per created volume and 3 per restored one (its intent too).
 * `--latency` adds that many milliseconds to every catalog read, get or list (a remote store,
 * roughly). Prints the catalog reads per list and the list's milliseconds (best of 3).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackupManager, ChunkedBackupService, MemoryVolumeDriver, Repository, RepositoryCatalog } from '@cairn/core';
import { PosixObjectStore } from '@cairn/backup-posix';
import { option as opt } from './lib/args.mjs';

const count = Number(opt('--volumes', '1000'));
const latencyMs = Number(opt('--latency', '0'));

const best = async (fn) => {
  let ms = Infinity;
  for (let k = 0; k < 3; k++) {
    const t = performance.now();
    await fn();
    ms = Math.min(ms, performance.now() - t);
  }
  return ms.toFixed(1);
};

const dir = mkdtempSync(join(tmpdir(), 'cairn-volume-list-'));
try {
  const store = await PosixObjectStore.open({ directory: dir });
  await Repository.init(store, { passphrase: 'bench', kdf: { N: 1024, r: 8, p: 1 } });
  const service = await ChunkedBackupService.open(store, { name: 'posix', passphrase: 'bench' });
  // Every catalog read goes through the store's get or list: counted (and delayed by --latency) here.
  const repoStore = service.repository.store;
  let reads = 0;
  const read = async () => {
    reads++;
    if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs));
  };
  const get = repoStore.get.bind(repoStore);
  repoStore.get = async (...args) => (await read(), get(...args));
  const list = repoStore.list.bind(repoStore);
  repoStore.list = async function* (...args) {
    await read();
    yield* list(...args);
  };
  const catalog = new RepositoryCatalog(service.repository);
  console.log(`| volumes | kind | catalog reads per list | list (ms, best of 3) |`);
  console.log('|---|---|---|---|');
  for (const restored of [false, true]) {
    const volumes = new MemoryVolumeDriver();
    for (let i = 0; i < count; i++) {
      const metadata = restored ? { 'cairn.restore-job': `00000000-0000-4000-8000-${String(i).padStart(12, '0')}` } : {};
      await volumes.createVolume({ name: `v${i}`, size: 1024 * 1024, metadata });
    }
    const manager = new BackupManager({ volumes, targets: { posix: service }, catalog });
    const list = () => manager.listVolumes();
    const views = await list();
    if (views.some((v) => v.status !== 'available')) throw new Error('a volume was not shown available');
    reads = 0;
    const ms = await best(list);
    console.log(`| ${count} | ${restored ? 'restored to a new volume (cairn.restore-job)' : 'created'} | ${(reads / 3).toFixed(1)} | ${ms} |`);
  }
  await service.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
