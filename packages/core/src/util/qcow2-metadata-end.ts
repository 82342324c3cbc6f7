import { open, type FileHandle } from 'node:fs/promises';
import { CairnError } from '../errors.js';
import type { QemuCheckReport } from './image-data-end.js';
import { holdsCompressedCluster } from './qcow2-compressed.js';
import { parseQcow2Header } from './qcow2-header.js';

/** What assertQcow2MetadataWithinFile is told about a qcow2 image (whose `qemu-img check` found no corruption). */
export interface Qcow2MetadataProbe {
  /** The check's JSON report: the walk runs only when the file ends short of its `image-end-offset`. */
  check: QemuCheckReport;
  /** The size of the image's file now. */
  fileSize: number;
  /** Tags the errors (CairnError's `driver`). */
  driver?: string;
}

/** The qcow2 structures the walk checks, as named in a verdict's message and `details.structure`. */
export type Qcow2Structure =
  | 'header'
  | 'L1 table'
  | 'L2 table'
  | 'refcount table'
  | 'refcount block'
  | 'snapshot table'
  | 'snapshot L1 table'
  | 'snapshot L2 table'
  | 'bitmap directory'
  | 'bitmap table'
  | 'bitmap data'
  | 'compressed cluster';

/**
 * The rule for a qcow2 image whose file ends short of `image-end-offset`, next to
 * assertDataWithinFile's (which covers the data clusters `qemu-img map` places): every metadata
 * structure qemu would read must lie within the file. qemu reads what lies past the end of the
 * file as zeros: the cut part of an L2 table reads as unallocated clusters (their data served as
 * zeros), of a refcount block as free clusters (overwritten by the next allocation), of a bitmap
 * table or its data as clean (changes a "changed since" query never reports), and qemu-img check
 * counts none of it as a corruption (a cut L2 table's clusters are mere leaks to it). So, from the
 * header (qemu's docs/interop/qcow2.txt), each structure at the size qemu reads it:
 * - the header (its first 72 bytes, 104 for version 3) and its extensions (within the first cluster);
 * - the active L1 table (`l1_size` × 8 bytes) and each L2 table its entries point to (one cluster);
 * - the refcount table (`refcount_table_clusters` clusters) and each refcount block (one cluster),
 *   but for a block's entries that describe clusters at or past `image-end-offset`: qemu-img check
 *   (qcow2-refcount.c, compare_refcounts) sets that offset past every cluster it found referenced
 *   or counted, and counts a referenced cluster whose refcount reads as zero as a corruption, so
 *   such entries were zero (or counted a leak): a block cut there reads as it was written;
 * - the compressed clusters of the L1 tables' L2 tables when check counted any ("compressed-clusters"):
 *   qemu reads each one's sector range (its L2 entry's offset and sector count) and inflates it,
 *   the cut part as zeros, which zlib decodes into wrong data without an error. Such a range may
 *   legitimately pass the end of the file (qemu rounds it up to 512 bytes but writes only the
 *   compressed bytes), so one that does must hold a whole deflate stream of one cluster within
 *   the file (holdsCompressedCluster: a zlib stream inflating to one cluster, a whole zstd frame);
 * - the snapshot table (`nb_snapshots` entries of variable size, the last unpadded as qemu writes
 *   it) and each snapshot's L1 table and the L2 tables it points to;
 * - the bitmaps extension's directory (`bitmap_directory_size` bytes), each bitmap's table
 *   (`bitmap_table_size` × 8 bytes) and the data clusters it points to (one cluster each), when
 *   the header's autoclear bit 0 says the bitmaps are consistent: without it (a writer that knows
 *   no bitmaps changed the image) qemu ignores the extension and reads none of them.
 * Structures qemu writes short (an L1 table, a bitmap directory or table, the snapshot table)
 * pass when the file ends right after them: that is how a legitimately short file ends.
 *
 * `CORRUPT` for the first one found past the end of the file, naming `image` and the structure,
 * with `details` `{ file, fileSize, structure, offset, end }` (`file`: `image`; `offset` and `end`:
 * the structure's byte range in the file). Nothing is read when the file reaches
 * `image-end-offset` (check counted every cluster the structures use: all lie within), nor for a
 * report without one. Otherwise the header and the tables are read with positioned reads, the
 * tables 64 KiB at a time: memory stays flat in the image's size, and the time grows with the
 * tables (8 bytes an entry: ~16 KiB of L1 for a 1 TiB image with 64 KiB clusters), never with the
 * data. With compressed clusters every L2 table is read too (one cluster at a time: 128 MiB for a
 * fully allocated 1 TiB image, as check itself reads them), and of the data only the compressed
 * clusters whose ranges pass the end of the file (the last few). A table whose entry counts are absurd is still bounded by the file (it must lie within
 * it). `INTERNAL` naming `image` when the file cannot be read.
 */
export async function assertQcow2MetadataWithinFile(image: string, probe: Qcow2MetadataProbe): Promise<void> {
  const reported = probe.check['image-end-offset'];
  if (reported === undefined || !(probe.fileSize < Number(reported))) return;
  let fh: FileHandle;
  try {
    fh = await open(image, 'r');
  } catch (err) {
    throw unreadable(image, probe.driver, err);
  }
  try {
    const compressed = Number(probe.check['compressed-clusters'] ?? 0) > 0;
    await new MetadataWalk(fh, image, probe.fileSize, Number(reported), compressed, probe.driver).run();
  } catch (err) {
    if (err instanceof CairnError) throw err;
    throw unreadable(image, probe.driver, err);
  } finally {
    await fh.close().catch(() => {});
  }
}

function unreadable(image: string, driver: string | undefined, cause: unknown): CairnError {
  return new CairnError('INTERNAL', `cannot read the qcow2 metadata of image ${image}: ${(cause as Error).message}`, { driver, cause });
}

/** Bits 9-55 of an L1, refcount table, L2 or bitmap table entry: the host offset it points to (0: none). */
const OFFSET_MASK = 0x00fffffffffffe00n;
/** Table entries read at once (64 KiB). */
const ENTRIES_PER_READ = 8192;
/** The bitmaps header extension's type. */
const BITMAPS_EXTENSION = 0x23852875;
/** autoclear_features bit 0: the bitmaps extension is consistent (else qemu ignores it). */
const BITMAPS_CONSISTENT = 1n;
/** incompatible_features bit 4: extended L2 entries (16 bytes each). */
const EXTENDED_L2 = 1n << 4n;
/** An L2 entry's bit 62: the cluster is compressed. */
const COMPRESSED = 1n << 62n;

/** One walk over an image's structures (assertQcow2MetadataWithinFile). */
class MetadataWalk {
  private clusterSize = 0;
  private clusterBits = 0;
  /** Bytes of an L2 entry (16 with extended L2). */
  private l2EntryBytes = 8;
  /** Whether compressed clusters are zstd (compression_type 1) rather than zlib. */
  private zstd = false;
  private bitmapsConsistent = false;

  constructor(
    private readonly fh: FileHandle,
    private readonly image: string,
    private readonly fileSize: number,
    /** qemu-img check's `image-end-offset`. */
    private readonly imageEnd: number,
    /** Whether check counted compressed clusters (only then are the L2 tables read). */
    private readonly compressed: boolean,
    private readonly driver: string | undefined,
  ) {}

  async run(): Promise<void> {
    this.within('header', 0, 72);
    const header = parseQcow2Header(await this.read(0, Math.min(this.fileSize, 112)));
    if (!header) throw new CairnError('CORRUPT', `image ${this.image} is damaged: it does not start with qcow2's magic`, { driver: this.driver, details: { file: this.image } });
    const version = header.version!;
    this.clusterBits = header.clusterBits!;
    this.clusterSize = 2 ** this.clusterBits;
    if (version >= 3) this.within('header', 0, 104);
    const headerLength = header.headerLength!;
    this.within('header', 0, headerLength);
    const refcountBits = 2 ** header.refcountOrder!;
    this.bitmapsConsistent = (header.autoclearFeatures! & BITMAPS_CONSISTENT) !== 0n;
    if ((header.incompatibleFeatures! & EXTENDED_L2) !== 0n) this.l2EntryBytes = 16;
    this.zstd = header.compressionType === 1;

    await this.l1('L1 table', 'L2 table', num(header.l1TableOffset!), header.l1Size!);
    const refcountTable = num(header.refcountTableOffset!);
    const refcountEntries = (header.refcountTableClusters! * this.clusterSize) / 8;
    this.within('refcount table', refcountTable, refcountEntries * 8);
    const blockEntries = (this.clusterSize * 8) / refcountBits;
    await this.pointers(refcountTable, refcountEntries, (at, index) => this.refcountBlock(at, index * blockEntries, refcountBits));
    await this.snapshots(num(header.snapshotsOffset!), header.nbSnapshots!);
    await this.extensions(headerLength);
  }

  /** An L1 table of `entries` at `offset` (named `table`) and the L2 tables (named `l2`) it points to. */
  private async l1(table: Qcow2Structure, l2: Qcow2Structure, offset: number, entries: number): Promise<void> {
    if (entries === 0) return;
    this.within(table, offset, entries * 8);
    const tables: number[] = [];
    await this.pointers(offset, entries, (at) => {
      this.within(l2, at, this.clusterSize);
      if (this.compressed) tables.push(at);
    });
    for (const at of tables) await this.compressedClusters(at);
  }

  /**
   * The refcount block at `offset` whose first entry counts cluster `first` (entries of `bits`
   * bits): its entries past the end of the file must all count clusters at or past image-end-offset.
   */
  private refcountBlock(offset: number, first: number, bits: number): void {
    if (offset + this.clusterSize <= this.fileSize) return;
    const firstCut = offset >= this.fileSize ? 0 : Math.floor(((this.fileSize - offset) * 8) / bits);
    if ((first + firstCut) * this.clusterSize >= this.imageEnd) return;
    this.within('refcount block', offset, this.clusterSize);
  }

  /** The compressed clusters the L2 table at `offset` maps whose sector range passes the end of the file: each must inflate within it. */
  private async compressedClusters(offset: number): Promise<void> {
    const table = await this.read(offset, this.clusterSize);
    const offsetBits = BigInt(62 - (this.clusterBits - 8));
    const offsetMask = (1n << offsetBits) - 1n;
    const sectorsMask = (1n << BigInt(this.clusterBits - 8)) - 1n;
    for (let i = 0; i < this.clusterSize; i += this.l2EntryBytes) {
      const entry = table.readBigUInt64BE(i);
      if ((entry & COMPRESSED) === 0n) continue;
      const start = num(entry & offsetMask);
      const sectors = Number((entry >> offsetBits) & sectorsMask) + 1;
      const end = start - (start % 512) + sectors * 512;
      if (end <= this.fileSize) continue;
      if (start < this.fileSize) {
        const bytes = await this.read(start, Math.min(this.fileSize - start, end - start));
        if (holdsCompressedCluster(bytes, this.zstd, this.clusterSize)) continue;
      }
      this.within('compressed cluster', start, end - start);
    }
  }

  /**
   * The snapshot table: `count` entries from `offset`, each 40 bytes then its extra data, ID and
   * name, padded to 8 bytes but for the last (qemu writes it unpadded); each snapshot's L1 table.
   */
  private async snapshots(offset: number, count: number): Promise<void> {
    let at = offset;
    for (let i = 0; i < count; i++) {
      this.within('snapshot table', at, 40);
      const entry = await this.read(at, 40);
      const length = 40 + entry.readUInt32BE(36) + entry.readUInt16BE(12) + entry.readUInt16BE(14);
      this.within('snapshot table', at, length);
      await this.l1('snapshot L1 table', 'snapshot L2 table', num(entry.readBigUInt64BE(0)), entry.readUInt32BE(8));
      at += align8(length);
    }
  }

  /** The header extensions from `start` to the end of the first cluster: the bitmaps extension's structures. */
  private async extensions(start: number): Promise<void> {
    const end = Math.min(this.clusterSize, this.fileSize);
    for (let at = start; at + 8 <= end; ) {
      const ext = await this.read(at, 8);
      const type = ext.readUInt32BE(0);
      const length = ext.readUInt32BE(4);
      if (type === 0) return;
      this.within('header', at, 8 + length);
      if (type === BITMAPS_EXTENSION && length >= 24 && this.bitmapsConsistent) {
        const bitmaps = await this.read(at + 8, 24);
        await this.bitmaps(num(bitmaps.readBigUInt64BE(16)), num(bitmaps.readBigUInt64BE(8)), bitmaps.readUInt32BE(0));
      }
      at += 8 + align8(length);
    }
  }

  /** The bitmap directory (`size` bytes, `count` entries of 24 bytes then extra data and name, each padded to 8), each bitmap's table and data. */
  private async bitmaps(offset: number, size: number, count: number): Promise<void> {
    this.within('bitmap directory', offset, size);
    let at = offset;
    for (let i = 0; i < count && at + 24 <= offset + size; i++) {
      const entry = await this.read(at, 24);
      const table = num(entry.readBigUInt64BE(0));
      const entries = entry.readUInt32BE(8);
      if (entries > 0) {
        this.within('bitmap table', table, entries * 8);
        await this.pointers(table, entries, (data) => this.within('bitmap data', data, this.clusterSize));
      }
      at += align8(24 + entry.readUInt32BE(20) + entry.readUInt16BE(18));
    }
  }

  /** Hands each non-zero host offset among the `count` table entries at `offset` to `each` (with its entry's index), reading 64 KiB at a time. */
  private async pointers(offset: number, count: number, each: (at: number, index: number) => void): Promise<void> {
    for (let done = 0; done < count; done += ENTRIES_PER_READ) {
      const n = Math.min(ENTRIES_PER_READ, count - done);
      const chunk = await this.read(offset + done * 8, n * 8);
      for (let i = 0; i < n; i++) {
        const at = chunk.readBigUInt64BE(i * 8) & OFFSET_MASK;
        if (at !== 0n) each(num(at), done + i);
      }
    }
  }

  /** `CORRUPT` when `structure`'s `length` bytes at `offset` do not lie within the file. */
  private within(structure: Qcow2Structure, offset: number, length: number): void {
    const end = offset + length;
    if (end <= this.fileSize) return;
    throw new CairnError('CORRUPT', `image ${this.image} is damaged: it is cut short, its ${structure} at byte ${offset} reaches byte ${end} of the file but the file ends at ${this.fileSize}`, {
      driver: this.driver,
      details: { file: this.image, fileSize: this.fileSize, structure, offset, end },
    });
  }

  /** Exactly `length` bytes at `offset` (which `within` found in the file): a shorter read (the file shrank meanwhile) is `CORRUPT` as well. */
  private async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await this.fh.read(buf, got, length - got, offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got < length) {
      throw new CairnError('CORRUPT', `image ${this.image} is damaged: it ends at byte ${offset + got}, inside the metadata it held when the walk began (it shrank meanwhile)`, {
        driver: this.driver,
        details: { file: this.image, fileSize: offset + got },
      });
    }
    return buf;
  }
}

function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

/** A u64 offset as a number (offsets qemu-img check accepted are far below 2^53; a larger one reads as past any file). */
function num(v: bigint): number {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : Number.MAX_SAFE_INTEGER;
}
