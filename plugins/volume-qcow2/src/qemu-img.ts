import { stat } from 'node:fs/promises';
import { assertDataWithinFile, assertQcow2MetadataWithinFile, CairnError, runBounded, type ErrorCode, type RunBound } from '@cairn/core';
import { assertTrustedHeader } from './image-header.js';
import { imageErrorCode, withoutPaths } from './image-lock.js';

/** Cluster size of every image the driver creates, and granularity of every dirty bitmap (64 KiB). */
export const CLUSTER = 64 * 1024;

/** Bounds of every qemu-img run (see runBounded). */
export interface QemuImgBounds {
  /** Metadata work (create, check, info): at most this long in all, in ms. */
  timeoutMs: number;
  /** Data copies (convert): never this long without progress, in ms. */
  stallMs: number;
}

/**
 * Runs `qemu-img` with arguments (no shell). Errors, told from what qemu-img wrote with the file
 * names left out (see image-lock.ts): `UNAVAILABLE` when the binary cannot be run, `BUSY` when
 * another process holds the image's lock (qemu's lock failure, nothing else), `NOT_FOUND` for a
 * missing file or bitmap, `CORRUPT` for an image that is not valid qcow2, `UNAVAILABLE` for a full
 * file system or exhausted quota (`details.errno` ENOSPC or EDQUOT, `details.file` the file being
 * written: fullDisk), `INTERNAL` for any other failure (permission denied, I/O error…; stderr in
 * the message).
 *
 * No run is unbounded (hung storage, e.g. a dead NFS server, would otherwise hang the caller, with
 * the volume's lock and holds, forever): metadata work fails with `UNAVAILABLE` naming the command
 * after `bounds.timeoutMs`, a copy after `bounds.stallMs` without progress; the child is killed
 * (SIGTERM, SIGKILL after a grace) before the call fails, and each caller undoes what it began.
 */
export class QemuImg {
  constructor(
    private readonly binary: string,
    private readonly driver: string,
    private readonly bounds: QemuImgBounds,
  ) {}

  /**
   * Creates an empty qcow2 image of `size` bytes with 64 KiB clusters (metadata only: bounded by
   * the timeout). A create that fails, also one that timed out, may leave a partial file at `path`:
   * the caller removes it.
   */
  async create(path: string, size: number): Promise<void> {
    await this.run(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${CLUSTER}`, path, String(size)], [path], [], undefined, undefined, path);
  }

  /**
   * Copies `src` to a new qcow2 `dst` (version 3), sparse (only allocated clusters are written),
   * with its persistent dirty bitmaps; inconsistent bitmaps are left out (`--skip-broken-bitmaps`).
   * A qcow2 version 2 `src` holds none and is copied without them (qemu-img refuses `--bitmaps`
   * for it: "Source lacks bitmap support"); it is only read, never changed.
   * `shared` (`-U`): `src` is opened without taking its lock, for a caller that holds it itself
   * (so nobody writes it meanwhile); else `BUSY` while another process has it open. `CORRUPT`
   * when `src` names a backing file or an external data file (the copy would hold that other
   * file's data), or qemu marked it corrupt (assertTrustedHeader). The copy takes as long as the
   * data: it has no deadline, but fails with `UNAVAILABLE` once it made no progress (`-p` output,
   * its I/O counters) for `stallMs`; it is killed first, and the caller removes the partial `dst`.
   */
  async copyWithBitmaps(src: string, dst: string, shared = false): Promise<void> {
    const { holdsBitmaps } = await assertTrustedHeader(src, this.driver);
    await this.assertWhole(src, shared);
    const bitmaps = holdsBitmaps ? ['--bitmaps', '--skip-broken-bitmaps'] : [];
    const args = ['convert', '-p', ...(shared ? ['-U'] : []), '-f', 'qcow2', '-O', 'qcow2', '-o', `cluster_size=${CLUSTER},compat=1.1`, ...bitmaps, src, dst];
    await this.run(args, [src, dst], [], { kind: 'stall', ms: this.bounds.stallMs }, undefined, dst);
  }

  /**
   * Checks the qcow2 image at `path` with qemu's own `qemu-img check` (read-only, nothing
   * repaired) before it is opened or copied. `CORRUPT` when qemu counts corruptions — above all a
   * table or cluster that lies past the end of the file: an image cut short (a full disk, an
   * interrupted copy) still opens in qemu, which reads what was cut as zeros, so a backup would
   * store zeros for lost data — or when qemu cannot open it as valid qcow2. Leaked clusters (left
   * by a daemon that was killed) are not damage: they hold nothing anyone reads. Its cost grows
   * with the image's metadata (the L1/L2 and refcount tables, about 1/8192 of the allocated
   * data): ~10 ms for an 8 GiB image with 4 GiB allocated on an idle machine (README, "Truncated
   * images"; bench/check-cost.mjs).
   *
   * qemu's check allows the file to end less than one cluster short of the last cluster it
   * counts (`image-end-offset`): legitimately so for a bitmap directory or table, a compressed
   * cluster or a subcluster (extended L2) written last, but a data cluster cut there is served
   * with its lost tail as zeros, and so is a cut L2 table's mapping (its clusters read as
   * unallocated: zeros), a cut refcount block's or bitmap table's content. So when the file is
   * shorter than `image-end-offset`, the metadata qemu would read (the L1 and L2 tables, the
   * refcount table and blocks, the snapshot table, the bitmap directory, tables and data:
   * assertQcow2MetadataWithinFile, positioned reads of the tables only) and the data it would read
   * from the file (`qemu-img map`: every allocated extent's host range) must lie within it, else
   * `CORRUPT` naming the structure or the data's end. The map reports no host range for a
   * compressed cluster (as `qemu-img convert -c` writes, and cloud images are): the walk reads the
   * L2 tables then, and each compressed cluster whose sector range passes the end of the file
   * must hold its whole stream within it (`CORRUPT` naming the `compressed cluster`: qemu would
   * inflate a cut one to wrong data without an error). The map runs
   * only then (an image without bitmaps, subclusters or compressed clusters ends at
   * `image-end-offset`). Without `shared` it takes the image's lock while it runs:
   * `BUSY` while another process has the image open for writing; `shared` (`-U`) is for a caller
   * that holds the lock itself, so nobody writes meanwhile. Other failures as `run` (`NOT_FOUND`
   * for a missing file); an I/O error during the check is `INTERNAL`.
   */
  async assertWhole(path: string, shared = false): Promise<void> {
    const args = ['check', '--output=json', ...(shared ? ['-U'] : []), '-f', 'qcow2', path];
    // Exit status 2 (corruptions) and 3 (leaks only) still report in JSON on stdout.
    const out = await this.run(args, [path], [2, 3]);
    const report = this.jsonReport(out, 'check') as { corruptions?: unknown; 'check-errors'?: unknown; 'image-end-offset'?: unknown; 'compressed-clusters'?: unknown };
    const corruptions = Number(report.corruptions ?? 0);
    if (corruptions > 0) {
      throw new CairnError('CORRUPT', `image ${path} is damaged: qemu-img check counts ${corruptions} corruption(s) (a truncated image has clusters past its end)`, {
        driver: this.driver,
        details: { corruptions },
      });
    }
    const checkErrors = Number(report['check-errors'] ?? 0);
    if (checkErrors > 0) throw new CairnError('INTERNAL', `${this.binary} check of ${path} could not complete: ${checkErrors} error(s)`, { driver: this.driver });
    // The file may end short of image-end-offset: the shared rules (@cairn/core), its metadata
    // (assertQcow2MetadataWithinFile) and its data (assertDataWithinFile) must lie within it.
    const fileSize = (await stat(path)).size;
    await assertQcow2MetadataWithinFile(path, { check: report, fileSize, driver: this.driver });
    await assertDataWithinFile(path, {
      check: report,
      fileSize,
      // Streamed: a fragmented image's map runs to tens of MiB (an entry per extent), more than a kept stdout may hold.
      streamMap: async (sink) => {
        await this.run(['map', '--output=json', ...(shared ? ['-U'] : []), '-f', 'qcow2', path], [path], [], undefined, sink);
      },
      mapWhat: `${this.binary} map`,
      driver: this.driver,
      // The map places no compressed cluster; the metadata walk above checked each one that
      // passes the end of the file (its whole zlib stream or zstd frame within it).
      compressed: 'unchecked',
    });
  }

  /**
   * The virtual size of the closed qcow2 image at `path` and its persistent dirty bitmaps, by name,
   * as qemu-img reports their flags: `auto` (enabled: recording) and `in-use` (not saved cleanly:
   * inconsistent). One `qemu-img info`. `CORRUPT` when it reports no size.
   */
  async describe(path: string): Promise<{ size: number; bitmaps: Map<string, { recording: boolean; inconsistent: boolean }> }> {
    const info = await this.info(path);
    const size = info['virtual-size'];
    if (typeof size !== 'number') throw new CairnError('CORRUPT', `${this.binary} info reports no virtual size for an image`, { driver: this.driver });
    const data = (info['format-specific'] as { data?: { bitmaps?: { name?: unknown; flags?: unknown }[] } } | undefined)?.data;
    const bitmaps = new Map<string, { recording: boolean; inconsistent: boolean }>();
    for (const b of data?.bitmaps ?? []) {
      const flags = Array.isArray(b.flags) ? b.flags : [];
      if (typeof b.name === 'string') bitmaps.set(b.name, { recording: flags.includes('auto'), inconsistent: flags.includes('in-use') });
    }
    return { size, bitmaps };
  }

  /**
   * `qemu-img info --output=json` of a closed image (`-U` when `shared`: may see stale data).
   * `INTERNAL` when its stdout is not a JSON object (jsonReport).
   */
  async info(path: string, shared = false): Promise<Record<string, unknown>> {
    const out = await this.run(['info', '--output=json', ...(shared ? ['-U'] : []), '-f', 'qcow2', path], [path]);
    return this.jsonReport(out, 'info');
  }

  /**
   * The JSON object a successful `qemu-img <command> --output=json` printed on stdout; `INTERNAL`
   * (`<binary> <command>: unreadable report: <its first 200 characters>`) for anything else: text
   * that is not JSON, or JSON that is not an object (an array, a string, null).
   */
  private jsonReport(out: string, command: string): Record<string, unknown> {
    let report: unknown;
    try {
      report = JSON.parse(out);
    } catch (err) {
      throw new CairnError('INTERNAL', `${this.binary} ${command}: unreadable report: ${out.slice(0, 200)}`, { driver: this.driver, cause: err });
    }
    if (typeof report !== 'object' || report === null || Array.isArray(report)) {
      throw new CairnError('INTERNAL', `${this.binary} ${command}: unreadable report: ${out.slice(0, 200)}`, { driver: this.driver });
    }
    return report as Record<string, unknown>;
  }

  /**
   * Whether a process has the qcow2 image at `path` open for writing, by qemu's lock (`qemu-img
   * info` without `-U`, which reads nothing but the header): `held` on qemu's lock failure (a
   * daemon that has it open as a writable node); `free` when qemu-img opens it, finds no file, or
   * finds no qcow2 image in it (no qemu can have it open as one); `unknown` for any other failure
   * (no qemu-img, no permission, an I/O error). A process that opened it read-only is not seen.
   * The probe holds the lock for as long as it runs: an open by a daemon at that moment fails.
   */
  async lockState(path: string): Promise<'held' | 'free' | 'unknown'> {
    try {
      await this.info(path);
      return 'free';
    } catch (err) {
      const code = (err as CairnError).code;
      if (code === 'BUSY') return 'held';
      return code === 'NOT_FOUND' || code === 'CORRUPT' ? 'free' : 'unknown';
    }
  }

  /**
   * Runs qemu-img; `paths` are the file names in `args` (left out when its stderr is classified).
   * `reporting`: exit statuses that still answer on stdout (qemu-img check's), resolved like 0.
   * `bound`: metadata work by default (the timeout); see runBounded. `onStdout`: stdout is handed
   * to it as it comes and not kept (runBounded's `onStdout`; the run then resolves '').
   * `writes`: the file the run writes (create's image, convert's copy), named by a full-disk error.
   */
  private async run(
    args: string[],
    paths: string[],
    reporting: number[] = [],
    bound: RunBound = { kind: 'deadline', ms: this.bounds.timeoutMs },
    onStdout?: (chunk: Buffer) => void,
    writes?: string,
  ): Promise<string> {
    const what = `${this.binary} ${args[0]}`;
    let result;
    try {
      result = await runBounded(this.binary, args, { bound, what, driver: this.driver, ...(onStdout ? { onStdout } : {}) });
    } catch (err) {
      if (err instanceof CairnError) throw err;
      throw new CairnError('UNAVAILABLE', `cannot run ${this.binary}: ${(err as Error).message}`, { driver: this.driver, cause: err });
    }
    const { status, signal, stdout, stderr } = result;
    if (status === 0 || (status !== null && reporting.includes(status))) return stdout;
    const text = stderr.trim();
    const how = status === null ? `killed by ${signal}` : `exit status ${status}`;
    const errno = noSpaceErrnoOf(text, paths);
    if (errno) throw fullDisk(what, writes, errno, text, { status, signal }, this.driver);
    throw new CairnError(classify(text, paths), `${what}: ${text || how}`, { driver: this.driver, details: { status, signal } });
  }
}

/**
 * The errno qemu-img's message names when the file system it wrote was full (qemu prints
 * strerror's text: `No space left on device`, `Disk quota exceeded`), paths aside; else undefined.
 */
function noSpaceErrnoOf(stderr: string, paths: string[]): 'ENOSPC' | 'EDQUOT' | undefined {
  const text = withoutPaths(stderr, paths);
  if (/No space left on device/.test(text)) return 'ENOSPC';
  if (/Disk quota exceeded/.test(text)) return 'EDQUOT';
  return undefined;
}

/**
 * A qemu-img run that failed for a full file system: `UNAVAILABLE` (retryable once space is freed,
 * as core's toCairnError maps ENOSPC and EDQUOT for the driver's own writes), `details.errno` the
 * errno, which core's noSpaceErrno (and the CLI's full-disk hint) read, and `details.file` the file
 * it was writing, named in the message too, as the volume-file driver names a full disk.
 */
function fullDisk(what: string, file: string | undefined, errno: 'ENOSPC' | 'EDQUOT', stderr: string, details: Record<string, unknown>, driver: string): CairnError {
  const reason = errno === 'EDQUOT' ? 'the disk quota is exhausted' : 'no space left on the file system';
  return new CairnError('UNAVAILABLE', `${what}${file ? ` ${file}` : ''}: ${reason} (${stderr})`, { driver, details: { ...details, errno, ...(file ? { file } : {}) } });
}

function classify(stderr: string, paths: string[]): ErrorCode {
  const code = imageErrorCode(stderr, paths);
  if (code) return code;
  return /Dirty bitmap '[^']*' not found/.test(withoutPaths(stderr, paths)) ? 'NOT_FOUND' : 'INTERNAL';
}
