import { CairnError } from '../errors.js';

/** The fields of `qemu-img check --output=json` that assertDataWithinFile reads. */
export interface QemuCheckReport {
  'image-end-offset'?: unknown;
  'compressed-clusters'?: unknown;
}

/** What assertDataWithinFile is told about one image file, whose check found no corruption. */
export interface ImageEndProbe {
  /** The check's JSON report; one without `image-end-offset` (VMDK reports none) always has the map consulted. */
  check: QemuCheckReport;
  /** The size of the image's file now. */
  fileSize: number;
  /** Runs `qemu-img map --output=json` of the image (read-only) and resolves its stdout; called only when needed. */
  map: () => Promise<string>;
  /** Names the map run in an `INTERNAL` error for an unreadable report (e.g. `qemu-img map`). */
  mapWhat: string;
  /** Tags the errors (CairnError's `driver`). */
  driver?: string;
  /**
   * For an image whose data lie in several files (a VMDK descriptor's sparse extents, each a file
   * of its own): the guest byte range `[start, end)` held by `image`, one of them; only map
   * entries starting in it count. Absent: every entry is in `image`.
   */
  guestRange?: { start: number; end: number };
  /**
   * What an image with compressed clusters that ends short of its last cluster gets: `refuse`
   * (default) `NOT_SUPPORTED`, as a cut there cannot be told; `unchecked`: its uncompressed data
   * are checked against the map as any image's, its compressed clusters are not (for an import of
   * images as distributed, cloud images being compressed qcow2s).
   */
  compressed?: 'refuse' | 'unchecked';
}

/**
 * The rule for an image whose file may end short of its last cluster, shared by the qcow2 volume
 * driver and `cairn volume import`. qemu 7's `qemu-img check` allows a qcow2 file to end up to
 * one cluster short of `image-end-offset` (legitimately so when a bitmap directory or table, a
 * compressed cluster or an extended-L2 subcluster was written last), and VMDK's check allows a
 * monolithicSparse file to end inside its last grain; qemu then reads the cut tail of a data
 * cluster as zeros, without an error. So:
 * - a file that reaches `image-end-offset` is whole (the map is not run);
 * - otherwise an image with compressed clusters (as check counts them) is `NOT_SUPPORTED`: map
 *   reports no host range for them, so a cut there cannot be told (unless `probe.compressed` is
 *   `unchecked`: then only its uncompressed data are checked, by the next rule);
 * - otherwise every allocated data range qemu would read from the file (map's `offset` +
 *   `length` of each `data` entry) must lie within it, else `CORRUPT` naming `image`, with
 *   `details` `{ fileSize, dataEnd }`. Entries without an offset (compressed data, e.g. a
 *   streamOptimized VMDK's grains) are not counted.
 * The map's offsets must be offsets in `image` itself (qemu-img's JSON map names no file): for an
 * image whose data lie in several files, one call per file with its `guestRange` (map entries do
 * not span files). Not for a qcow2 with an external data file. `INTERNAL` for a map report
 * that is not a JSON list; errors of `map` itself are passed on.
 */
export async function assertDataWithinFile(image: string, probe: ImageEndProbe): Promise<void> {
  const { check, fileSize, driver } = probe;
  const end = check['image-end-offset'] === undefined ? Number.POSITIVE_INFINITY : Number(check['image-end-offset']);
  if (!(fileSize < end)) return;
  const compressed = Number(check['compressed-clusters'] ?? 0);
  if (compressed > 0 && probe.compressed !== 'unchecked') {
    throw new CairnError('NOT_SUPPORTED', `image ${image} has ${compressed} compressed cluster(s) and ends ${end - fileSize} bytes short of its last cluster: whether it was cut there cannot be told (qemu-img convert without -c writes it uncompressed)`, {
      driver,
    });
  }
  const dataEnd = mappedDataEnd(await probe.map(), probe.mapWhat, driver, probe.guestRange);
  if (dataEnd > fileSize) {
    throw new CairnError('CORRUPT', `image ${image} is damaged: it is cut short, its data reaches byte ${dataEnd} of the file but the file ends at ${fileSize}`, {
      driver,
      details: { fileSize, dataEnd },
    });
  }
}

/**
 * The end of the data qemu reads from an image's file, from `qemu-img map --output=json`: the
 * highest end of the host ranges of allocated data (0 when none). Extents without a host offset
 * (compressed data) are not counted, nor, given `range`, those starting outside it. `INTERNAL`
 * naming `what` when the report is not a JSON list.
 */
function mappedDataEnd(out: string, what: string, driver?: string, range?: { start: number; end: number }): number {
  let extents: unknown;
  try {
    extents = JSON.parse(out);
  } catch (err) {
    throw new CairnError('INTERNAL', `${what}: unreadable report: ${out.slice(0, 200)}`, { driver, cause: err });
  }
  if (!Array.isArray(extents)) throw new CairnError('INTERNAL', `${what}: unreadable report: ${out.slice(0, 200)}`, { driver });
  let end = 0;
  for (const e of extents as Array<{ start?: unknown; data?: unknown; offset?: unknown; length?: unknown }>) {
    if (range && !(typeof e.start === 'number' && e.start >= range.start && e.start < range.end)) continue;
    if (e.data === true && typeof e.offset === 'number' && typeof e.length === 'number') end = Math.max(end, e.offset + e.length);
  }
  return end;
}
