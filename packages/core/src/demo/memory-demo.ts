/**
 * The flow end to end on the memory reference drivers: create a volume with realistic content,
 * back it up, change blocks, take an incremental, restore both to new volumes and check each
 * byte-for-byte against the source as it was at its backup. Exit code 1 if any check fails.
 * (The `cairn demo` command replaces this with file volumes and a posix repository.)
 */
import { createHash, randomBytes } from 'node:crypto';
import { BackupManager } from '../flow/backup-manager.js';
import { MemoryBackupService } from '../memory/memory-backup-service.js';
import { MemoryCatalog } from '../memory/memory-catalog.js';
import { MemoryVolumeDriver } from '../memory/memory-volume-driver.js';
import type { VolumeDriver } from '../contracts/volume-driver.js';

const MiB = 1024 * 1024;

async function digest(driver: VolumeDriver, volumeId: string): Promise<string> {
  const a = await driver.attach({ kind: 'volume', id: volumeId }, 'ro');
  try {
    const h = createHash('sha256');
    for (let off = 0; off < a.device.size; off += 4 * MiB) h.update(await a.device.read(off, Math.min(4 * MiB, a.device.size - off)));
    return h.digest('hex');
  } finally {
    await driver.detach(a.id);
  }
}

async function main(): Promise<number> {
  const size = 64 * MiB;
  const volumes = new MemoryVolumeDriver();
  const manager = new BackupManager({ volumes, targets: { memory: new MemoryBackupService() }, catalog: new MemoryCatalog() });
  const source = await volumes.createVolume({ size, name: 'demo-disk' });
  const rw = await volumes.attach({ kind: 'volume', id: source.id }, 'rw');
  for (let off = 0, i = 0; off < size; off += 4 * MiB, i++) {
    if (i % 3 === 0) await rw.device.write(off, randomBytes(4 * MiB));
    else if (i % 3 === 1) await rw.device.write(off, Buffer.from('lorem ipsum dolor sit amet '.repeat(160_000)).subarray(0, 4 * MiB));
  }
  await volumes.detach(rw.id);
  const sumFull = await digest(volumes, source.id);
  const rows: string[][] = [];
  const t0 = Date.now();
  const full = await manager.backup({ volumeId: source.id, name: 'full' });
  rows.push(['full', String(full.size), String(full.stats?.bytesRead), String(full.stats?.bytesStored), `${Date.now() - t0} ms`]);

  const rw2 = await volumes.attach({ kind: 'volume', id: source.id }, 'rw');
  for (let i = 0; i < 32; i++) await rw2.device.write(((i * 7919) % (size / 65536)) * 65536, randomBytes(65536));
  await volumes.detach(rw2.id);
  const sumInc = await digest(volumes, source.id);
  const t1 = Date.now();
  const inc = await manager.backup({ volumeId: source.id, incremental: true, name: 'incremental' });
  rows.push(['incremental', String(inc.size), String(inc.stats?.bytesRead), String(inc.stats?.bytesStored), `${Date.now() - t1} ms`]);

  let failed = 0;
  for (const [backup, expected] of [[full, sumFull], [inc, sumInc]] as const) {
    const { volume } = await manager.restore({ backupId: backup.id, newVolume: { name: `restore-of-${backup.name}` } });
    const ok = (await digest(volumes, volume.id)) === expected;
    if (!ok) failed++;
    console.log(`restore of ${backup.name}: ${ok ? 'byte-exact' : 'MISMATCH'}`);
  }
  console.log(['backup', 'size', 'bytes read', 'bytes stored', 'time'].join('\t'));
  for (const r of rows) console.log(r.join('\t'));
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
