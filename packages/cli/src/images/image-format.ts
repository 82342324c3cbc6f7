import { open, stat } from 'node:fs/promises';
import { assertDataWithinFiles, assertQcow2MetadataWithinFile, CairnError, runBounded, type QemuCheckReport, type RunBound } from '@cairn/core';
import { vmdkSparseExtents } from './image-refs.js';
import { qemuImgBoundsFromEnv } from './qemu-img-bounds.js';

/** Disk image formats `volume import`/`volume export` understand. */
export const IMAGE_FORMATS = ['raw', 'qcow2', 'vmdk'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

/** Validates a `--format` value. `INVALID_INPUT` for an unknown one. */
export function parseFormat(text: string): ImageFormat | 'auto' {
  if (text === 'auto' || (IMAGE_FORMATS as readonly string[]).includes(text)) return text as ImageFormat | 'auto';
  throw new CairnError('INVALID_INPUT', `unknown image format ${text} (expected auto, ${IMAGE_FORMATS.join(', ')})`);
}

/** The format of an existing image from its magic bytes: `QFI\xfb` qcow2, `KDMV` or a descriptor VMDK, else raw. */
export async function detectFormat(file: string): Promise<ImageFormat> {
  const b = await readHead(file, 512);
  if (b.subarray(0, 4).equals(Buffer.from([0x51, 0x46, 0x49, 0xfb]))) return 'qcow2';
  if (b.subarray(0, 4).toString('latin1') === 'KDMV') return 'vmdk';
  if (b.toString('latin1').startsWith('# Disk DescriptorFile')) return 'vmdk';
  return 'raw';
}

/** The first `length` bytes of `file` (fewer when it is shorter). */
async function readHead(file: string, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(length);
    const { bytesRead } = await fh.read(head, 0, length, 0);
    return head.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The format an output file name implies: `.qcow2` → qcow2, `.vmdk` → vmdk, else raw. */
export function formatFromName(file: string): ImageFormat {
  if (/\.qcow2?$/i.test(file)) return 'qcow2';
  if (/\.vmdk$/i.test(file)) return 'vmdk';
  return 'raw';
}

/** What a failed qemu-img run means when nothing more telling is known: the input image is damaged (import), or a bug (export). */
type Otherwise = 'CORRUPT' | 'INTERNAL';

interface QemuRun {
  stdout: string;
  stderr: string;
  code: number | null;
}

/**
 * Runs qemu-img (C locale, so its messages can be matched) under a bound (runBounded of
 * @cairn/core, bounds from qemuImgBoundsFromEnv): `metadata` runs (`info`, `check`, `map`) at most the
 * timeout in all, a `copy` (`convert`) never the stall window without progress; one that overruns
 * is killed (SIGTERM, SIGKILL after a grace) and the run fails with `UNAVAILABLE` naming the
 * command (`qemu-img info`…), only once the kill is over, so the caller's cleanup of its output
 * does not race it. Killed the same way once `signal` aborts (then `CANCELLED`). `NOT_SUPPORTED`
 * when qemu-img is missing or cannot be run; a qemu-img killed by a signal nobody here sent is
 * `INTERNAL` saying so. A non-zero exit is returned, for the caller to judge with qemuFailure.
 * With `onStdout`, stdout goes to it as it comes and is not kept (runBounded: no 16 MiB cap).
 */
async function runQemuImg(args: string[], need: string, work: 'metadata' | 'copy', signal?: AbortSignal, onStdout?: (chunk: Buffer) => void): Promise<QemuRun> {
  const what = `qemu-img ${args[0]}`;
  const bounds = qemuImgBoundsFromEnv(process.env);
  const bound: RunBound = work === 'metadata' ? { kind: 'deadline', ms: bounds.timeoutMs } : { kind: 'stall', ms: bounds.stallMs };
  let run;
  try {
    run = await runBounded('qemu-img', args, { bound, what, driver: 'qemu-img', signal, env: { ...process.env, LC_ALL: 'C' }, ...(onStdout ? { onStdout } : {}) });
  } catch (err) {
    if (err instanceof CairnError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const missing = code === 'ENOENT' || code === 'EACCES';
    throw new CairnError(missing ? 'NOT_SUPPORTED' : 'INTERNAL', missing ? `${need} need qemu-img, which is ${code === 'ENOENT' ? 'not installed' : 'not executable'}` : `qemu-img failed to start: ${(err as Error).message}`, { driver: 'qemu-img', cause: err });
  }
  const { status, signal: killedBy, stdout, stderr } = run;
  if (killedBy) throw new CairnError('INTERNAL', `${what} was killed by ${killedBy}${stderr.trim() ? `: ${stderr.trim()}` : ''}`, { driver: 'qemu-img', details: { signal: killedBy } });
  return { stdout, stderr, code: status };
}

/**
 * The CairnError for a qemu-img run that exited non-zero: a full disk or quota → `UNAVAILABLE`;
 * an image locked by another process (a running VM) → `BUSY`; no permission or a read-only
 * file system → `UNAVAILABLE`; anything else `otherwise` (a damaged input image: `CORRUPT`).
 */
function qemuFailure(run: QemuRun, what: string, otherwise: Otherwise, hint = ''): CairnError {
  const msg = run.stderr.trim() || `exit ${run.code}`;
  const details = { exitCode: run.code };
  if (/No space left on device|Disk quota exceeded/i.test(msg)) return new CairnError('UNAVAILABLE', `${what}: the disk is full: ${msg}`, { driver: 'qemu-img', details });
  if (/File too large/i.test(msg)) return new CairnError('UNAVAILABLE', `${what}: the file system cannot hold a file that large: ${msg}`, { driver: 'qemu-img', details });
  if (/Failed to get .*lock|another process using the image/i.test(msg)) return new CairnError('BUSY', `${what}: the image is in use by another process: ${msg}`, { driver: 'qemu-img', details });
  if (/Permission denied|Read-only file system|Operation not permitted/i.test(msg)) return new CairnError('UNAVAILABLE', `${what}: ${msg}`, { driver: 'qemu-img', details });
  return new CairnError(otherwise, `${what}: ${msg}${otherwise === 'CORRUPT' ? hint : ''}`, { driver: 'qemu-img', details });
}

/**
 * How qemu-img is told to open an input image: a `json:` name with the driver given (never probed)
 * and `backing: null`, so that no backing file is ever opened whatever the image says.
 */
export function imageSpec(file: string, format: ImageFormat): string {
  return `json:${JSON.stringify({ driver: format, file: { driver: 'file', filename: file }, ...(format === 'raw' ? {} : { backing: null }) })}`;
}

/**
 * Checks an input image before it is converted, and returns its virtual size: `qemu-img info`
 * and `qemu-img check` (a truncated qcow2 or VMDK converts without an error, its missing
 * clusters read as zeros; check finds them). `CORRUPT` for an image qemu-img cannot open or whose
 * check finds errors (leaked clusters are harmless). check lets a file end less than one cluster
 * (qcow2) or grain (sparse VMDK) short, reading the cut tail of a data cluster as zeros: so a
 * qcow2's metadata (its L1/L2 and refcount tables, snapshot table, bitmaps: a cut L2 table reads
 * as unallocated, its data as zeros) must lie within its file when it ends short of
 * `image-end-offset` (assertQcow2MetadataWithinFile of @cairn/core, `CORRUPT` naming the
 * structure), and the data `qemu-img map` places in the file must lie within it (assertDataWithinFiles of @cairn/core,
 * the rule the qcow2 volume driver applies), `CORRUPT` naming the image otherwise; for a qcow2
 * only when its file ends short of `image-end-offset`, for a sparse VMDK always (its check
 * reports no end): a single-file one (magic `KDMV`), or each SPARSE or VMFSSPARSE extent of a descriptor
 * against the guest range it holds (vmdkSparseExtents; its FLAT extents' sizes are checked by
 * assertSelfContained), all from one `qemu-img map` read as it comes (memory flat in its entries). Compressed data (a compressed qcow2's clusters, a streamOptimized VMDK's
 * grains) have no place in the map: the map check passes them (cloud images are compressed
 * qcow2s); a qcow2's compressed cluster cut short (zlib would inflate it as wrong data) is found
 * by the metadata walk, `CORRUPT` naming the `compressed cluster`; a cut grain fails convert,
 * `CORRUPT`. Errors as qemuFailure otherwise. The
 * image must have passed assertSelfContained. `hint` ends messages about damage (e.g. --format
 * raw). Each run is bounded by the metadata timeout (`UNAVAILABLE` naming it; see runQemuImg).
 */
export async function inspectImage(file: string, format: Exclude<ImageFormat, 'raw'>, hint: string, signal?: AbortSignal): Promise<{ virtualSize: number }> {
  const spec = imageSpec(file, format);
  const need = `${format} images`;
  const info = await runQemuImg(['info', '--output=json', spec], need, 'metadata', signal);
  if (info.code !== 0) throw qemuFailure(info, `image ${file} cannot be read as ${format}`, 'CORRUPT', hint);
  const virtualSize = (JSON.parse(info.stdout) as { 'virtual-size'?: unknown })['virtual-size'];
  if (typeof virtualSize !== 'number' || !Number.isSafeInteger(virtualSize) || virtualSize < 0) {
    throw new CairnError('CORRUPT', `image ${file}: qemu-img reports no usable virtual size`, { driver: 'qemu-img' });
  }
  const check = await runQemuImg(['check', '--output=json', spec], need, 'metadata', signal);
  // 0 clean, 3 leaked clusters only, 63 no check for this format; 2 corruptions, 1 check failed.
  if (check.code === 63) return { virtualSize };
  const report = check.code === 0 || check.code === 2 || check.code === 3 ? checkReport(check.stdout) : undefined;
  if (check.code === 2) {
    const found = report && typeof report.corruptions === 'number' ? report.corruptions : 'some';
    throw new CairnError('CORRUPT', `image ${file} is damaged: qemu-img check found ${found} errors (a truncated or corrupt ${format})${hint}`, { driver: 'qemu-img', details: { exitCode: 2 } });
  }
  if (!report) throw qemuFailure(check, `image ${file} is damaged: qemu-img check failed`, 'CORRUPT', hint);
  // Where the data lie: the image's own file (qcow2, a sparse VMDK), or a descriptor's sparse
  // extents, each against the guest range it holds. One map run, read as it comes, never kept: a
  // fragmented image's map has an entry per extent, past runBounded's 16 MiB cap on kept output.
  const single = format === 'qcow2' || (await readHead(file, 4)).toString('latin1') === 'KDMV';
  const files = single ? [{ path: file, start: 0, end: Number.POSITIVE_INFINITY }] : await vmdkSparseExtents(file);
  const probe = {
    check: report,
    streamMap: async (sink: (chunk: Buffer) => void): Promise<void> => {
      const run = await runQemuImg(['map', '--output=json', spec], need, 'metadata', signal, sink);
      if (run.code !== 0) throw qemuFailure(run, `image ${file} is damaged: qemu-img map failed`, 'CORRUPT', hint);
    },
    mapWhat: 'qemu-img map',
    compressed: 'unchecked' as const,
  };
  const sized = await Promise.all(files.map(async ({ path, start, end }) => ({ path, size: (await stat(path)).size, guestRange: { start, end } })));
  // The rules' own verdicts carry no driver (qemu-img runs' errors do): tagged, with the hint.
  const tagged = (err: unknown): never => {
    if (!(err instanceof CairnError) || err.driver !== undefined) throw err;
    const of = err.details?.file === file ? '' : ` (an extent of ${file})`;
    throw new CairnError(err.code, `${err.message}${of}${err.code === 'CORRUPT' ? hint : ''}`, { driver: 'qemu-img', details: err.details, cause: err });
  };
  // A qcow2's metadata first: a cut L2 table hides its data from the map (they read as zeros).
  if (format === 'qcow2') await assertQcow2MetadataWithinFile(file, { check: report, fileSize: sized[0]!.size }).catch(tagged);
  await assertDataWithinFiles(sized, probe).catch(tagged);
  return { virtualSize };
}

/** qemu-img check's JSON report (exit 0, 2 or 3); undefined when stdout holds none. */
function checkReport(stdout: string): (QemuCheckReport & { corruptions?: unknown }) | undefined {
  try {
    const report = JSON.parse(stdout) as unknown;
    return report !== null && typeof report === 'object' && !Array.isArray(report) ? (report as QemuCheckReport) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `volume import` of a qcow2 or VMDK: converts the image `input` (opened by imageSpec, so no
 * backing file) into the raw NBD export `target` (`nbd+unix://…`, a volume's device served by
 * serveDeviceToQemu), which must be at least the image's virtual size (qemu-img refuses a smaller
 * one). `-n`: the target exists and is written in place, nothing is created; `-W`: writes out of
 * order (a block device, no file layout to keep); with `targetIsZero` (a new volume, all zeros),
 * `--target-is-zero`: zero areas of the image are not written at all. `NOT_SUPPORTED` when
 * qemu-img is not installed; a failure as qemuFailure with `CORRUPT` for one it cannot tell (the
 * image is damaged). Killed when `signal` aborts (`CANCELLED`) and when it makes no progress for
 * the stall window (`UNAVAILABLE`, see runQemuImg).
 */
export async function qemuConvertToNbd(
  input: string,
  inputFormat: Exclude<ImageFormat, 'raw'>,
  target: string,
  options: { targetIsZero: boolean; hint?: string; signal?: AbortSignal },
): Promise<void> {
  const args = ['convert', '-n', ...(options.targetIsZero ? ['--target-is-zero'] : []), '-W', '-O', 'raw', imageSpec(input, inputFormat), target];
  const run = await runQemuImg(args, `${inputFormat} images`, 'copy', options.signal);
  if (run.code !== 0) throw qemuFailure(run, `qemu-img convert ${input} to the volume failed`, 'CORRUPT', options.hint);
}

/**
 * `volume export` to qcow2 or VMDK: converts the raw NBD export `source` (a volume's device served
 * by serveDeviceToQemu; `-f raw`, never probed) into a new image file `output` of `outputFormat`.
 * qemu-img asks the export's block status and reads only data, and writes no zero clusters (sparse
 * output). `NOT_SUPPORTED` when qemu-img is not installed; a failure as qemuFailure (a full disk
 * `UNAVAILABLE`), `INTERNAL` for one it cannot tell. Killed when `signal` aborts (`CANCELLED`) and
 * when it makes no progress for the stall window (`UNAVAILABLE`). The caller removes `output` on
 * failure.
 */
export async function qemuConvertFromNbd(source: string, output: string, outputFormat: Exclude<ImageFormat, 'raw'>, options: { signal?: AbortSignal }): Promise<void> {
  const run = await runQemuImg(['convert', '-f', 'raw', '-O', outputFormat, source, output], `${outputFormat} images`, 'copy', options.signal);
  if (run.code !== 0) throw qemuFailure(run, `qemu-img convert of the volume to ${outputFormat} failed`, 'INTERNAL');
}
