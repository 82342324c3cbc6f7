import { StringDecoder } from 'node:string_decoder';
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
  map?: () => Promise<string>;
  /**
   * Like `map`, and used instead when given, but hands the report to `sink` as it comes, piece by
   * piece, and resolves once it is all handed over: it is read entry by entry (qemu-img prints one
   * a line) and never kept whole. A fragmented image's map has an entry per extent, about 107
   * bytes each: tens of MiB and more. One of the two is required.
   */
  streamMap?: (sink: (chunk: Buffer) => void) => Promise<void>;
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
  const dataEnd = await mappedDataEnd(probe);
  if (dataEnd > fileSize) {
    throw new CairnError('CORRUPT', `image ${image} is damaged: it is cut short, its data reaches byte ${dataEnd} of the file but the file ends at ${fileSize}`, {
      driver,
      details: { fileSize, dataEnd },
    });
  }
}

/**
 * The end of the data qemu reads from an image's file, from `qemu-img map --output=json`
 * (probe.streamMap, else probe.map): the highest end of the host ranges of allocated data (0 when
 * none). Extents without a host offset (compressed data) are not counted, nor, given
 * `probe.guestRange`, those starting outside it. `INTERNAL` naming `probe.mapWhat` when the
 * report is not a JSON list (streamed: a list of one entry a line, as qemu-img prints it).
 */
async function mappedDataEnd(probe: ImageEndProbe): Promise<number> {
  const { mapWhat: what, driver, guestRange: range } = probe;
  const unreadable = (text: string, cause?: unknown) => new CairnError('INTERNAL', `${what}: unreadable report: ${text.slice(0, 200)}`, { driver, cause });
  let end = 0;
  const take = (e: MapEntry): void => {
    if (!e || typeof e !== 'object') throw unreadable(JSON.stringify(e));
    if (range && !(typeof e.start === 'number' && e.start >= range.start && e.start < range.end)) return;
    if (e.data === true && typeof e.offset === 'number' && typeof e.length === 'number') end = Math.max(end, e.offset + e.length);
  };
  if (probe.streamMap) {
    const lines = new MapLines(take, unreadable);
    await probe.streamMap((chunk) => lines.push(chunk));
    lines.end();
    return end;
  }
  if (!probe.map) throw new CairnError('INTERNAL', `${what}: no map to read`, { driver });
  const out = await probe.map();
  let extents: unknown;
  try {
    extents = JSON.parse(out);
  } catch (err) {
    throw unreadable(out, err);
  }
  if (!Array.isArray(extents)) throw unreadable(out);
  for (const e of extents as MapEntry[]) take(e);
  return end;
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
