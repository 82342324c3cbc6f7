/**
 * Benchmark (not a test): a backup read through its NBD export vs a plain restore, same run.
 *   export:  serveBackup on a unix socket, `nbdcopy <uri> out.raw`, close      (wall time of all three)
 *   restore: BackupManager.restore into a new FileVolumeDriver volume          (wall time)
 * Both read the same posix repository (page cache warm after the first round). Rounds are
 * interleaved; medians of logical bytes per second (the volume's size over the time) are printed.
 *
 * usage: npm run bench:export --  [sizeMiB=2048] [rounds=3] [workdir]
 * Needs nbdcopy (libnbd-bin). The workdir (default a fresh temp dir) is removed at the end.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { BackupManager, ChunkedBackupService, RepositoryCatalog } from '@cairn/core';
import { FileVolumeDriver } from '@cairn/volume-file';
import { generateImage } from './lib/image.mjs';
import { serveBackup } from '@cairn/nbd';

const MiB = 1024 * 1024;
const sizeMiB = Number(process.argv[2] ?? 2048);
const rounds = Number(process.argv[3] ?? 3);
const work = process.argv[4] ?? (await mkdtemp(join(tmpdir(), 'bench-bx-')));
const size = sizeMiB * MiB;

function exec(cmd, args) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    p.once('error', reject);
    p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}`))));
  });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const gbps = (ms) => size / 1e9 / (ms / 1000);

const volumes = new FileVolumeDriver({ directory: join(work, 'volumes') });
const store = await PosixObjectStore.open({ directory: join(work, 'repo'), createDirectory: true });
const service = await ChunkedBackupService.open(store, { name: 'posix', init: true });
const manager = new BackupManager({ volumes, targets: { posix: service }, catalog: new RepositoryCatalog(service.repository) });

try {
  console.error(`preparing a ${sizeMiB} MiB volume (bench/lib/image.mjs) and its backup in ${work}`);
  const v = await volumes.createVolume({ size, name: 'bench-disk' });
  const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
  await generateImage(size, (offset, data) => a.device.write(offset, data));
  await a.device.flush();
  await volumes.detach(a.id);
  let t0 = performance.now();
  const backup = await manager.backup({ volumeId: v.id, name: 'bench' });
  console.error(`backup: ${Math.round(performance.now() - t0)} ms, chunk size ${service.repository.config.chunkSize}`);
  const sourceImage = join(work, 'volumes', 'volumes', `${v.id}.img`);

  const times = { export: [], restore: [] };
  for (let r = 0; r < rounds; r++) {
    // export → file
    const out = join(work, 'export.raw');
    t0 = performance.now();
    const served = await serveBackup(service, backup.id, { listen: { path: join(work, 'b.sock') } });
    await exec('nbdcopy', [served.uri, out]);
    await served.close();
    times.export.push(performance.now() - t0);
    if (r === 0) await exec('cmp', [out, sourceImage]); // byte-identical, or the bench stops
    await rm(out, { force: true });

    // plain restore → new file volume
    t0 = performance.now();
    const { volume } = await manager.restore({ backupId: backup.id, newVolume: { name: `restore-${r}` } });
    times.restore.push(performance.now() - t0);
    if (r === 0) await exec('cmp', [join(work, 'volumes', 'volumes', `${volume.id}.img`), sourceImage]);
    await volumes.deleteVolume(volume.id);
    console.error(`round ${r + 1}: export ${Math.round(times.export[r])} ms (${gbps(times.export[r]).toFixed(2)} GB/s), restore ${Math.round(times.restore[r])} ms (${gbps(times.restore[r]).toFixed(2)} GB/s)`);
  }
  const e = median(times.export);
  const rs = median(times.restore);
  const stored = (await service.stats()).storedBytes;
  console.log(
    JSON.stringify({
      sizeMiB,
      rounds,
      storedMiB: Math.round(stored / MiB),
      exportMs: Math.round(e),
      restoreMs: Math.round(rs),
      exportGBps: Number(gbps(e).toFixed(2)),
      restoreGBps: Number(gbps(rs).toFixed(2)),
      ratio: Number((rs / e).toFixed(2)),
    }),
  );
} finally {
  await service.close();
  if (!process.argv[4]) await rm(work, { recursive: true, force: true });
}
