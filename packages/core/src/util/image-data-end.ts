import { StringDecoder } from 'node:string_decoder';
import { CairnError } from '../errors.js';

/** The fields of `qemu-img check --output=json` that assertDataWithinFile reads. */
export interface QemuCheckReport {
  'image-end-offset'?: unknown;
  'compressed-clusters'?: unknown;
}

/** How assertDataWithinFile(s) reads an image's check and map (whose check found no corruption). */
export interface ImageMapProbe {
  /** The check's JSON report; one without `image-end-offset` (VMDK reports none) always has the map consulted. */
  check: QemuCheckReport;
  /**
   * Runs `qemu-img map --output=json` of the image (read-only), hands the report to `sink` as it
   * comes, piece by piece, and resolves once it is all handed over: it is read entry by entry
   * (qemu-img prints one a line) and never kept whole. A fragmented image's map has an entry per
   * extent, about 107 bytes each: tens of MiB and more. Called at most once, and only when needed.
   */
  streamMap: (sink: (chunk: Buffer) => void) => Promise<void>;
  /** Names the map run in an `INTERNAL` error for an unreadable report (e.g. `qemu-img map`). */
  mapWhat: string;
  /** Tags the errors (CairnError's `driver`). */
  driver?: string;
  /**
   * What an image with compressed clusters that ends short of its last cluster gets: `refuse`
   * (default) `NOT_SUPPORTED`, as a cut there cannot be told from the map; `unchecked`: its
   * uncompressed data are checked against the map as any image's, its compressed clusters are
   * not: for a caller that checks them otherwise (a qcow2's: assertQcow2MetadataWithinFile, as
   * the qcow2 volume driver and `cairn volume import` do; cloud images are compressed qcow2s).
   */
  compressed?: 'refuse' | 'unchecked';
}

/** What assertDataWithinFile is told about an image whose data lie in one file. */
export interface ImageEndProbe extends ImageMapProbe {
  /** The size of the image's file now. */
  fileSize: number;
}

/** One of the files an image's data lie in (a VMDK descriptor's sparse extents, each a file of its own). */
export interface ImageDataFile {
  /** Named in errors (and `details.file`). */
  path: string;
  /** Its size now. */
  size: number;
  /** The guest byte range `[start, end)` it holds: only map entries starting in it count. The files' ranges do not overlap. */
  guestRange: { start: number; end: number };
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
 *   `details` `{ fileSize, dataEnd, file }` (`file`: `image`). Entries without an offset (compressed data, e.g. a
 *   streamOptimized VMDK's grains) are not counted.
 * Metadata in the cut tail (a qcow2's L2 table, refcount block, bitmap or snapshot table) is no
 * data the map places: assertQcow2MetadataWithinFile (qcow2-metadata-end.ts) is that rule.
 * The map's offsets must be offsets in `image` itself (qemu-img's JSON map names no file): for an
 * image whose data lie in several files, assertDataWithinFiles. Not for a qcow2 with an external
 * data file. `INTERNAL` for a map report that is not a JSON list; errors of `streamMap` itself are
 * passed on.
 */
export function assertDataWithinFile(image: string, probe: ImageEndProbe): Promise<void> {
  return assertWithin([{ path: image, size: probe.fileSize }], probe);
}

/**
 * assertDataWithinFile's rule for an image whose data lie in several files (map entries do not
 * span files): each of `files` against the map entries starting in its `guestRange`. One map run
 * for them all, read as it comes: memory grows with the number of files, never with the map's
 * entries. The verdict names the first file, in the order given, that breaks the rule; its
 * `details.file` is that file's path.
 */
export function assertDataWithinFiles(files: readonly ImageDataFile[], probe: ImageMapProbe): Promise<void> {
  return assertWithin(files, probe);
}

async function assertWithin(files: ReadonlyArray<{ path: string; size: number; guestRange?: GuestRange }>, probe: ImageMapProbe): Promise<void> {
  const { check, driver } = probe;
  const end = check['image-end-offset'] === undefined ? Number.POSITIVE_INFINITY : Number(check['image-end-offset']);
  const short = files.filter((f) => f.size < end);
  if (short.length === 0) return;
  const compressed = Number(check['compressed-clusters'] ?? 0);
  if (compressed > 0 && probe.compressed !== 'unchecked') {
    const { path, size } = short[0]!;
    throw new CairnError('NOT_SUPPORTED', `image ${path} has ${compressed} compressed cluster(s) and ends ${end - size} bytes short of its last cluster: whether it was cut there cannot be told (qemu-img convert without -c writes it uncompressed)`, {
      driver,
      details: { file: path },
    });
  }
  const dataEnds = await mappedDataEnds(probe, short.map((f) => f.guestRange));
  short.forEach(({ path, size: fileSize }, i) => {
    const dataEnd = dataEnds[i]!;
    if (dataEnd > fileSize) {
      throw new CairnError('CORRUPT', `image ${path} is damaged: it is cut short, its data reaches byte ${dataEnd} of the file but the file ends at ${fileSize}`, {
        driver,
        details: { fileSize, dataEnd, file: path },
      });
    }
  });
}

type GuestRange = { start: number; end: number };

/**
 * The ends of the data qemu reads from each of an image's files, from one streamed
 * `qemu-img map --output=json` (probe.streamMap): per entry of `ranges`, the highest end of the
 * host ranges of allocated data whose entry starts in that guest range (`undefined`: every entry;
 * only as the sole range), 0 when none. Extents without a host offset (compressed data) are not
 * counted. `INTERNAL` naming `probe.mapWhat` when the report is not a JSON list of one entry a
 * line, as qemu-img prints it.
 */
async function mappedDataEnds(probe: ImageMapProbe, ranges: ReadonlyArray<GuestRange | undefined>): Promise<number[]> {
  const { mapWhat: what, driver } = probe;
  const unreadable = (text: string, cause?: unknown) => new CairnError('INTERNAL', `${what}: unreadable report: ${text.slice(0, 200)}`, { driver, cause });
  const ends = ranges.map(() => 0);
  const rangeOf = rangeFinder(ranges);
  const take = (e: MapEntry): void => {
    if (!e || typeof e !== 'object') throw unreadable(JSON.stringify(e));
    if (!(e.data === true && typeof e.offset === 'number' && typeof e.length === 'number')) return;
    const i = rangeOf(e.start);
    if (i !== undefined) ends[i] = Math.max(ends[i]!, e.offset + e.length);
  };
  const lines = new MapLines(take, unreadable);
  await probe.streamMap((chunk) => lines.push(chunk));
  lines.end();
  return ends;
}

/**
 * Which of `ranges` (non-overlapping) holds guest offset `start`: its index, or undefined (not a
 * number, or in none). A single `undefined` range holds every offset. Binary search by start.
 */
function rangeFinder(ranges: ReadonlyArray<GuestRange | undefined>): (start: unknown) => number | undefined {
  if (ranges.length === 1 && ranges[0] === undefined) return () => 0;
  const order = ranges.map((r, i) => ({ ...r!, i })).sort((a, b) => a.start - b.start);
  return (start) => {
    if (typeof start !== 'number') return undefined;
    let lo = 0;
    let hi = order.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = order[mid]!;
      if (start < r.start) hi = mid - 1;
      else if (start >= r.end) lo = mid + 1;
      else return r.i;
    }
    return undefined;
  };
}

/** One entry of a `qemu-img map --output=json` report, as far as mappedDataEnd reads it (null or not an object: unreadable). */
type MapEntry = { start?: unknown; data?: unknown; offset?: unknown; length?: unknown } | null;

/**
 * The entries of a `qemu-img map --output=json` report read as it comes: a JSON list with one
 * entry a line (`[{…},` … `{…},` … `{…}]`, or `[]`), each handed to `take` as soon as its line is
 * complete; only the current line is kept. `unreadable` makes the error for anything else.
 */
class MapLines {
  private readonly decoder = new StringDecoder('utf8');
  private partial = '';
  private opened = false;
  private closed = false;

  constructor(
    private readonly take: (entry: MapEntry) => void,
    private readonly unreadable: (text: string, cause?: unknown) => Error,
  ) {}

  push(chunk: Buffer): void {
    const text = this.partial + this.decoder.write(chunk);
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) this.line(line);
  }

  /** After the last chunk: `unreadable` unless the list was opened and closed. */
  end(): void {
    this.line(this.partial + this.decoder.end());
    this.partial = '';
    if (!this.opened || !this.closed) throw this.unreadable('(the list is not closed)');
  }

  private line(raw: string): void {
    let line = raw.trim();
    if (!line) return;
    if (this.closed) throw this.unreadable(line);
    if (!this.opened) {
      if (!line.startsWith('[')) throw this.unreadable(line);
      this.opened = true;
      line = line.slice(1).trimStart();
    }
    if (line.endsWith(']')) {
      this.closed = true;
      line = line.slice(0, -1).trimEnd();
    } else if (line.endsWith(',')) line = line.slice(0, -1);
    else throw this.unreadable(line);
    if (!line) return;
    let entry: unknown;
    try {
      entry = JSON.parse(line);
    } catch (err) {
      throw this.unreadable(line, err);
    }
    this.take(entry as MapEntry);
  }
}
