import { open, stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { assertCallerVolumeMetadata, CairnError, type VolumeDriver } from '@cairn/core';
import type { Command } from 'commander';
import { withContext } from '../command-runner.js';
import type { CliContext } from '../context.js';
import { createSocketDir, serveDeviceToQemu } from '../images/device-nbd.js';
import { differingWrites } from '../images/differing-writes.js';
import { detectFormat, formatFromName, inspectImage, parseFormat, qemuConvertFromNbd, qemuConvertToNbd, type ImageFormat } from '../images/image-format.js';
import { assertSelfContained } from '../images/image-refs.js';
import { writeDeviceToImage, writeImageToDevice, type CopyStats } from '../images/image-copy.js';
import { checkInputFile } from '../io/input-file.js';
import { cancellableBySignal } from '../jobs/cancel-on-signal.js';
import { outputPath, WRITE_THROUGH_HELP } from '../io/output-path.js';
import { removeOwnedTempDir } from '../io/owned-temp-dir.js';
import { createPartialFile } from '../io/partial-file.js';
import { progressReporter } from '../output/progress.js';
import { renderFields, renderTable } from '../output/table.js';
import { shownText } from '../output/terminal-text.js';
import { formatBytes, parseSize, optionParser } from '../output/units.js';
import { snapshotColumns, snapshotJson, volumeColumns, volumeJson, volumeText } from '../output/views.js';
import { metadataPairs, registerVolumeMetadataCommand } from './volume-metadata.js';

/** `cairn volume …`: volumes and snapshots on the configured volume driver, raw/qcow2/VMDK import and export. */
export function registerVolumeCommands(program: Command): void {
  const volume = program.command('volume').description('volumes and snapshots on the configured volume driver');

  volume
    .command('create <name>')
    .description('create a zero-filled volume')
    .requiredOption('-s, --size <size>', 'size, e.g. 64MiB, 1G (a multiple of 512 bytes)', optionParser(parseSize))
    .option('-m, --metadata <key=value>', 'metadata (repeatable)', (text: string, acc: string[]) => [...acc, text], [])
    .action(
      withContext<{ size: number; metadata: string[] }>(async (ctx, [name], opts) => {
        // Parsed here, not by commander, so that a bad pair keeps its details (as `volume metadata set`).
        const metadata = metadataPairs(opts.metadata);
        // The limits of `volume metadata set` (no empty key, at most 255 characters, no `cairn.*` key), before anything is created.
        assertCallerVolumeMetadata(metadata);
        const v = await (await ctx.volumes()).createVolume({ name, size: opts.size, metadata });
        ctx.out.result(volumeJson(v), () => volumeText(v));
      }),
    );

  volume
    .command('list')
    .description('list volumes, oldest first, with the backup flow state laid over their status')
    .action(
      withContext(async (ctx) => {
        // Core's one listing (BackupManager.listVolumes): each volume as `volume show` shows it,
        // from one read of the catalog's flow states and intents, as GET /v1/volumes.
        const views = await (await ctx.manager()).listVolumes();
        ctx.out.result(views.map(volumeJson), () => renderTable(views, volumeColumns));
      }),
    );

  volume
    .command('show <volume>')
    .description('show a volume (by id or unique name) and its snapshots')
    .action(
      withContext(async (ctx, [ref]) => {
        const v = await ctx.resolveVolume(ref!);
        const view = await (await ctx.manager()).getVolume(v.id);
        const driver = await ctx.volumes();
        const snapshots = driver.capabilities.snapshots ? await driver.listSnapshots(v.id) : [];
        ctx.out.result({ ...volumeJson(view), snapshots: snapshots.map(snapshotJson) }, () => volumeText(view, snapshots));
      }),
    );

  volume
    .command('delete <volume>')
    .description('delete a volume (refused with BUSY while attached or while it has snapshots, CONFLICT during a backup or restore)')
    .action(
      withContext(async (ctx, [ref]) => {
        // The flow is core's (BackupManager.deleteVolume), after the recovery the manager runs
        // first: a flow state a dead process left is settled before it is judged. A retry of a
        // delete killed midway succeeds (CliContext.deleteVolume).
        const id = await ctx.deleteVolume(ref!, () => ctx.manager({ recover: true }));
        ctx.out.result({ deleted: id }, () => `deleted volume ${shownText(id)}`);
      }),
    );

  registerVolumeMetadataCommand(volume);

  volume
    .command('snapshot <volume>')
    .description('take a crash-consistent snapshot of a volume')
    .option('-n, --name <name>', 'snapshot name')
    .action(
      withContext<{ name?: string }>(async (ctx, [ref], opts) => {
        const v = await ctx.resolveVolume(ref!);
        const s = await (await ctx.volumes()).createSnapshot(v.id, opts.name);
        ctx.out.result(snapshotJson(s), () => renderTable([s], snapshotColumns));
      }),
    );

  volume
    .command('snapshots <volume>')
    .description("list a volume's snapshots, oldest first")
    .action(
      withContext(async (ctx, [ref]) => {
        const v = await ctx.resolveVolume(ref!);
        const list = await (await ctx.volumes()).listSnapshots(v.id);
        ctx.out.result(list.map(snapshotJson), () => renderTable(list, snapshotColumns));
      }),
    );

  volume
    .command('delete-snapshot <snapshot-id>')
    .description('delete a snapshot')
    .action(
      withContext(async (ctx, [id]) => {
        await (await ctx.volumes()).deleteSnapshot(id!);
        ctx.out.result({ deleted: id }, () => `deleted snapshot ${shownText(id!)}`);
      }),
    );

  volume
    .command('import <image-file>')
    .description('bring a raw, qcow2 or VMDK image in as a new volume, or overwrite a volume with it (only differing blocks are written)')
    .option('-n, --name <name>', 'name of the new volume (default: the file name)')
    .option('--into <volume>', 'overwrite this existing volume instead of creating one')
    .option('-f, --format <format>', 'image format: auto, raw, qcow2, vmdk', optionParser(parseFormat), 'auto')
    .action(
      withContext<{ name?: string; into?: string; format: ImageFormat | 'auto' }>((ctx, [file], opts) =>
        cancellableBySignal(ctx.out, 'volume import', (signal) => importImage(ctx, resolve(file!), opts, signal)),
      ),
    );

  volume
    .command('export <volume> <file>')
    .description("write a volume's content to a raw, qcow2 or VMDK image file (not \"-\": an image is only ever a complete file)")
    .option('-f, --format <format>', 'image format: auto (from the file name), raw, qcow2, vmdk', optionParser(parseFormat), 'auto')
    .option('--force', `overwrite an existing file (${WRITE_THROUGH_HELP})`, false)
    .action(
      withContext<{ format: ImageFormat | 'auto'; force: boolean }>(async (ctx, [ref, file], opts) => {
        // Not stdout (as `backup export --archive -`): the image appears whole or not at all
        // (written beside, then renamed), and qemu-img writes qcow2 and VMDK to a file it can seek
        // in, neither of which a stream can do. A file named "-" is `./-`.
        if (file === '-') throw new CairnError('INVALID_INPUT', 'volume export cannot write an image to stdout ("-"): name a file (for a file named "-", ./-)');
        return cancellableBySignal(ctx.out, 'volume export', (signal) => exportImage(ctx, ref!, resolve(file!), opts, signal));
      }),
    );
}

/**
 * `volume import`. A qcow2 or VMDK image is first checked (image-refs.ts: it must name no other
 * file, `INVALID_INPUT`; `qemu-img info` and `check`: `CORRUPT` when damaged or truncated), and
 * its virtual size compared with an `--into` volume, before anything is converted or created.
 * It is then converted straight into the volume, with no temporary copy: the volume's device is
 * served over NBD on a private unix socket (serveDeviceToQemu, in `$TMPDIR/cairn-import-XXXXXX`,
 * or in `/tmp` for a `$TMPDIR` too deep for a socket path: createSocketDir; it names its owner
 * so one left by a killed import is removed by the next: owned-temp-dir.ts)
 * and `qemu-img convert -n` writes into it (a new volume is made of the image's virtual size,
 * rounded up to 512 bytes, and told zero: zero areas are not written). Both raw and converted
 * images write only the blocks that differ from the volume (differingWrites, writeImageToDevice),
 * and an `--into` volume larger than the image gets zeros past its end. A new volume is deleted
 * on any failure, a cancel by `signal` (SIGINT/SIGTERM) included, so an interrupted import leaves
 * no half-written volume under the image's name; a qemu-img still converting is killed on a cancel,
 * and the zeroing past the image's end of an `--into` volume stops (differingWrites checks `signal`).
 */
async function importImage(ctx: CliContext, file: string, opts: { name?: string; into?: string; format: ImageFormat | 'auto' }, signal?: AbortSignal): Promise<void> {
  if (opts.name !== undefined && opts.into !== undefined) throw new CairnError('INVALID_INPUT', '--name and --into exclude each other');
  await checkInputFile(file, 'image');
  const format = opts.format === 'auto' ? await detectFormat(file) : opts.format;
  // A raw disk may begin like a qcow2 or VMDK (a guest wrote one at its sector 0).
  const hint = opts.format === 'auto' && format !== 'raw' ? ` (recognised as ${format} by its first bytes; if it is a raw disk image, import it with --format raw)` : '';
  const imageSize = format === 'raw' ? (await stat(file)).size : await checkedImageSize(file, format, hint, signal);
  if (imageSize === 0) throw new CairnError('INVALID_INPUT', `image ${file} is empty`);
  const driver = await ctx.volumes();
  const manager = await ctx.manager({ recover: true });
  let into: { id: string; size: number } | undefined;
  if (opts.into !== undefined) {
    const v = await ctx.resolveVolume(opts.into);
    const view = await manager.getVolume(v.id);
    if (view.status !== 'available') throw new CairnError('CONFLICT', `volume ${v.id} is ${view.status}, not available`);
    if (imageSize > v.size) throw new CairnError('INVALID_INPUT', `image ${file} (${imageSize} bytes) is larger than volume ${v.id} (${v.size} bytes)`);
    into = { id: v.id, size: v.size };
  }
  const volumeId = into
    ? into.id
    : (await driver.createVolume({ size: Math.ceil(imageSize / 512) * 512, name: opts.name ?? basename(file).replace(/\.(raw|img|qcow2?|vmdk)$/i, '') })).id;
  const created = !into;
  const stats = await copyInto(ctx, driver, volumeId, { file, format, size: imageSize, hint }, created, signal).catch(async (err) => {
    if (created) await driver.deleteVolume(volumeId).catch(() => {});
    throw err;
  });
  const view = await manager.getVolume(volumeId);
  ctx.out.result({ volume: volumeJson(view), format, created, ...stats }, () =>
    `${created ? 'imported' : 'overwrote'} volume ${shownText(view.id)} (${shownText(view.name)}) from ${format} image: ${formatBytes(stats.bytesScanned)} scanned, ${formatBytes(stats.bytesWritten)} written`,
  );
}

/** A qcow2 or VMDK's virtual size once it passed assertSelfContained and inspectImage. */
async function checkedImageSize(file: string, format: Exclude<ImageFormat, 'raw'>, hint: string, signal?: AbortSignal): Promise<number> {
  await assertSelfContained(file, format, hint);
  return (await inspectImage(file, format, hint, signal)).virtualSize;
}

/** Writes the image onto volume `volumeId` (zero-filled when `zeroed`): raw by writeImageToDevice, qcow2/VMDK by qemu-img over NBD. */
async function copyInto(
  ctx: CliContext,
  driver: VolumeDriver,
  volumeId: string,
  image: { file: string; format: ImageFormat; size: number; hint: string },
  zeroed: boolean,
  signal?: AbortSignal,
): Promise<CopyStats> {
  const a = await driver.attach({ kind: 'volume', id: volumeId }, 'rw');
  const progress = progressReporter('import', ctx.out.options);
  try {
    if (image.format === 'raw') return await writeImageToDevice(image.file, a.device, { targetIsZeroed: zeroed, progress: progress.update, signal });
    const target = differingWrites(a.device, signal);
    const temp = await createSocketDir('cairn-import-');
    try {
      const served = await serveDeviceToQemu(target.device, temp, highWater((done) => progress.update(done, a.device.size)));
      try {
        ctx.out.info(`converting ${image.format} image into the volume with qemu-img`);
        await qemuConvertToNbd(image.file, image.format, served.uri, { targetIsZero: zeroed, hint: image.hint, signal }).catch((err) => {
          throw served.failure ?? err; // the device's own error (a full disk…), not qemu-img's errno
        });
      } finally {
        await served.close();
      }
      // qemu-img wrote the image's virtual size; the rest of a larger --into volume reads as zeros
      // (differingWrites reads and compares only its allocated data there).
      if (!zeroed && image.size < a.device.size) await target.device.writeZeroes(image.size, a.device.size - image.size);
      await a.device.flush();
    } finally {
      await removeOwnedTempDir(temp); // its owner file last
    }
    progress.update(a.device.size, a.device.size);
    return { bytesScanned: a.device.size, bytesWritten: target.bytesWritten };
  } finally {
    progress.stop();
    await driver.detach(a.id);
  }
}

/** Reports only ends beyond the highest seen (requests of a client come slightly out of order). */
function highWater(report: (done: number) => void): (end: number) => void {
  let mark = 0;
  return (end) => {
    if (end > mark) report((mark = end));
  };
}

/**
 * Writes volume `ref` to the image `given`. A symbolic link is written through (outputPath): the
 * image replaces the file the link points to and the link is kept; the result's `file` is the
 * path written. The image is written as `<name>` in a private directory beside the path written
 * (createPartialFile: `.cairn-partial-XXXXXX`, naming this process), fsynced and renamed over it
 * only when complete (the directory is fsynced too): the file holds the old content or the whole
 * new image, never a partial one, also with `--force`. On any failure, a cancel by `signal`
 * (SIGINT/SIGTERM) included, that directory is removed; one an export killed outright left is
 * removed by the next export (or archive export) beside it, once its owner is certainly dead. The format `auto` follows the name given. A qcow2 or VMDK is converted by
 * `qemu-img convert` straight from the volume, with no temporary copy: its device is served
 * read-only over NBD on a private unix socket (serveDeviceToQemu) in `$TMPDIR/cairn-export-XXXXXX`
 * (createSocketDir: `/tmp` for a deep `$TMPDIR`), which names its owner (owned-temp-dir.ts); qemu-img reads only the data that block status
 * reports. `bytesWritten` is the data read from the volume (holes and zero extents excluded).
 */
async function exportImage(ctx: CliContext, ref: string, given: string, opts: { format: ImageFormat | 'auto'; force: boolean }, signal?: AbortSignal): Promise<void> {
  const format = opts.format === 'auto' ? formatFromName(given) : opts.format;
  const file = await outputPath(given, opts.force);
  const v = await ctx.resolveVolume(ref);
  const driver = await ctx.volumes();
  // Made first: a directory that cannot take the image fails before the volume is attached.
  const partialFile = await createPartialFile(file);
  const partial = partialFile.path;
  let temp: string | undefined;
  try {
    const a = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
    const progress = progressReporter('export', ctx.out.options);
    let stats: CopyStats;
    try {
      if (format === 'raw') stats = await writeDeviceToImage(a.device, partial, progress.update, signal);
      else {
        temp = await createSocketDir('cairn-export-');
        const served = await serveDeviceToQemu(a.device, temp, highWater((done) => progress.update(done, a.device.size)));
        try {
          await qemuConvertFromNbd(served.uri, partial, format, { signal }).catch((err) => {
            throw served.failure ?? err; // the volume's own read error, not qemu-img's errno
          });
        } finally {
          await served.close();
        }
        stats = { bytesScanned: a.device.size, bytesWritten: served.dataBytesRead };
        await fsyncFile(partial);
      }
    } finally {
      progress.stop();
      await driver.detach(a.id);
    }
    const { notDurable } = await partialFile.publish();
    if (notDurable) ctx.out.warn(notDurable.message); // in place, but perhaps not durable: said, not failed
    ctx.out.result({ volumeId: v.id, file, format, size: v.size, ...stats }, () =>
      renderFields([
        ['volume', `${v.name} (${v.id})`],
        ['file', file],
        ['format', format],
        ['size', formatBytes(v.size)],
        ['data written', formatBytes(stats.bytesWritten)],
      ]),
    );
  } catch (err) {
    await partialFile.discard();
    throw err;
  } finally {
    if (temp) await removeOwnedTempDir(temp); // its owner file last
  }
}

/** fsyncs a file written by another process (qemu-img), so a rename after it is durable. */
async function fsyncFile(file: string): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
