/**
 * One Cairn operation per process, so /usr/bin/time measures its elapsed time and peak RSS.
 * usage: node bench/cairn-op.mjs <op> <workdir> [options]
 *   prepare <size> [--volume <bytes>] [--no-raw]
 *                         file volume with the realistic image (and image.raw for restic); with
 *                         --volume, a larger volume holding the image at its start, holes after
 *   modify [--seed <n>] [--write-align <bytes>]
 *                         the day of writes, through the driver (tracked) and into image.raw;
 *                         another seed rewrites other blocks with other data (default 7); the
 *                         alignment of its 64 KiB writes (default 65536, lib/image.mjs dayOfWrites)
 *   init [--encrypt]      a posix repository
 *   backup <name> [--incremental] [--no-cbt]
 *   digest <name>         records the volume's SHA-256 under <name> (not timed)
 *   restore <name>        into a new volume
 *   restore-phases <name>  restore through the service, timing the copy and the flush apart
 *   check <name>          compares the restored volume with the digest, reports its allocation, deletes it
 * Any op: `--repo <dir>` uses the posix repository at <dir> instead of <workdir>/repo.
 * Prints one JSON line on stdout.
 */
import { createHash } from 'node:crypto';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupManager, ChunkedBackupService, Repository, RepositoryCatalog } from '@cairn/core';
import { FileVolumeDriver } from '@cairn/volume-file';
import { PosixObjectStore } from '@cairn/backup-posix';
import { dayOfWrites, generateImage } from './lib/image.mjs';

const [op, work, ...args] = process.argv.slice(2);
const PASS = 'bench-passphrase';
const statePath = join(work, 'state.json');
const state = async () => JSON.parse(await readFile(statePath, 'utf8'));
const driver = () => new FileVolumeDriver({ directory: join(work, 'volumes') });
const repoAt = args.indexOf('--repo');
const repoDir = repoAt >= 0 ? args[repoAt + 1] : join(work, 'repo');
const store = () => PosixObjectStore.open({ directory: repoDir, createDirectory: true });

async function digest(volumes, volumeId, size) {
  const a = await volumes.attach({ kind: 'volume', id: volumeId }, 'ro');
  const h = createHash('sha256');
  const buf = Buffer.alloc(4 << 20);
  for (let off = 0; off < size; off += buf.length) h.update(await a.device.read(off, Math.min(buf.length, size - off), buf));
  await volumes.detach(a.id);
  return h.digest('hex');
}

function withoutCbt(d) {
  const w = Object.create(d);
  Object.defineProperty(w, 'capabilities', { value: { ...d.capabilities, changedBlockTracking: false } });
  Object.defineProperty(w, 'changedBlockTracking', { value: undefined });
  return w;
}

async function manager(noCbt) {
  const s = await state();
  // As the cairn binary opens a target for a command that moves data (CliContext.expectDataFlow).
  const service = await ChunkedBackupService.open(await store(), { name: 'posix', passphrase: s.encrypt ? PASS : undefined, startWorkers: true });
  const volumes = noCbt ? withoutCbt(driver()) : driver();
  return { s, service, volumes, manager: new BackupManager({ volumes, targets: { posix: service }, catalog: new RepositoryCatalog(service.repository) }) };
}

const out = {};
if (op === 'prepare') {
  // The image fills the first <size> bytes; with `--volume <bytes>` the volume is larger and the
  // rest is never written (holes). `--no-raw` skips image.raw (restic's copy).
  const size = Number(args[0]);
  const volumeSize = args.includes('--volume') ? Number(args[args.indexOf('--volume') + 1]) : size;
  const withRaw = !args.includes('--no-raw');
  const volumes = driver();
  const v = await volumes.createVolume({ size: volumeSize, name: 'bench-disk' });
  const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
  const raw = withRaw ? await open(join(work, 'image.raw'), 'w') : undefined;
  await raw?.truncate(size);
  await generateImage(size, async (offset, data) => {
    await a.device.write(offset, data);
    await raw?.write(data, 0, data.length, offset);
  });
  await a.device.flush();
  await volumes.detach(a.id);
  await raw?.close();
  await writeFile(statePath, JSON.stringify({ volumeId: v.id, size, volumeSize, raw: withRaw }));
  out.volumeId = v.id;
} else if (op === 'modify') {
  const s = await state();
  const volumes = driver();
  const a = await volumes.attach({ kind: 'volume', id: s.volumeId }, 'rw');
  const raw = s.raw === false ? undefined : await open(join(work, 'image.raw'), 'r+');
  const seedAt = args.indexOf('--seed');
  const alignAt = args.indexOf('--write-align');
  out.bytesChanged = await dayOfWrites(
    s.size,
    async (offset, data) => {
      await a.device.write(offset, data);
      await raw?.write(data, 0, data.length, offset);
    },
    seedAt >= 0 ? Number(args[seedAt + 1]) : undefined,
    alignAt >= 0 ? Number(args[alignAt + 1]) : undefined,
  );
  await a.device.flush();
  await volumes.detach(a.id);
  await raw?.close();
} else if (op === 'init') {
  const s = await state();
  s.encrypt = args.includes('--encrypt');
  const chunk = args.indexOf('--chunk');
  await Repository.init(await store(), { passphrase: s.encrypt ? PASS : undefined, chunkSize: chunk >= 0 ? Number(args[chunk + 1]) : undefined });
  await writeFile(statePath, JSON.stringify(s));
} else if (op === 'backup') {
  const { s, service, manager: m } = await manager(args.includes('--no-cbt'));
  const t0 = performance.now();
  const b = await m.backup({ volumeId: s.volumeId, name: args[0], incremental: args.includes('--incremental') });
  out.ms = Math.round(performance.now() - t0);
  out.stats = b.stats;
  await service.close();
} else if (op === 'digest') {
  const s = await state();
  s.digests = { ...(s.digests ?? {}), [args[0]]: await digest(driver(), s.volumeId, s.size) };
  await writeFile(statePath, JSON.stringify(s));
} else if (op === 'restore') {
  const { s, service, volumes, manager: m } = await manager(false);
  const b = (await m.listBackups()).find((x) => x.name === args[0]);
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const { volume } = await m.restore({ backupId: b.id, newVolume: { name: `restore-${args[0]}` } });
  out.ms = Math.round(performance.now() - t0);
  const cpu = process.cpuUsage(cpu0);
  // CPU of all threads: a restore that took longer at the same CPU waited on the disk.
  out.cpuMs = { user: Math.round(cpu.user / 1000), system: Math.round(cpu.system / 1000) };
  s.restored = { ...(s.restored ?? {}), [args[0]]: volume.id };
  await writeFile(statePath, JSON.stringify(s));
  await service.close();
} else if (op === 'restore-phases') {
  // The same restore through the service directly, timing the copy and the final flush apart
  // (restic's restore does not fsync; the manager's always does).
  const { s, service, volumes, manager: m } = await manager(false);
  const b = (await m.listBackups()).find((x) => x.name === args[0]);
  const v = await volumes.createVolume({ size: b.size, name: `phases-${args[0]}` });
  const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
  const t0 = performance.now();
  await service.restore(b, a.device, { targetIsZeroed: true });
  out.copyMs = Math.round(performance.now() - t0);
  const t1 = performance.now();
  await a.device.flush();
  out.flushMs = Math.round(performance.now() - t1);
  await volumes.detach(a.id);
  await volumes.deleteVolume(v.id);
  await service.close();
} else if (op === 'check') {
  const s = await state();
  const volumes = driver();
  const id = s.restored[args[0]];
  out.exact = (await digest(volumes, id, s.size)) === s.digests[args[0]];
  if ((s.volumeSize ?? s.size) > s.size) {
    // Past the image the volume was never written: the restored one must hold no data there.
    const a = await volumes.attach({ kind: 'volume', id }, 'ro');
    const beyond = (await a.device.extents({ kind: 'allocated' })).filter((e) => !e.zero && e.offset + e.length > s.size);
    await volumes.detach(a.id);
    out.exact &&= beyond.length === 0;
  }
  out.allocatedBytes = (await stat(join(work, 'volumes', 'volumes', `${id}.img`))).blocks * 512;
  await volumes.deleteVolume(id);
}
out.maxRssMiB = Math.round(process.resourceUsage().maxRSS / 1024);
console.log(JSON.stringify(out));
