/** qcow2's magic, `QFI\xfb`: the header's first 4 bytes. */
export const QCOW2_MAGIC = 0x514649fb;

/**
 * The fields of a qcow2 header (qemu's docs/interop/qcow2.txt; all big-endian) that Cairn's
 * judgements read. Each is undefined when the bytes given end before it; the version 3 fields
 * are the version 2 defaults for a version 2 header (features 0, 16-bit refcounts, a 72-byte
 * header, zlib compression). u64 fields stay bigint: callers bound them.
 */
export interface Qcow2Header {
  version?: number;
  /** Where the backing file's name is (0: none), and its length. */
  backingFileOffset?: bigint;
  backingFileSize?: number;
  /** log2 of the cluster size. */
  clusterBits?: number;
  /** The virtual size in bytes. */
  size?: bigint;
  /** 0 none, 1 AES, 2 LUKS. */
  cryptMethod?: number;
  l1Size?: number;
  l1TableOffset?: bigint;
  refcountTableOffset?: bigint;
  refcountTableClusters?: number;
  nbSnapshots?: number;
  snapshotsOffset?: bigint;
  incompatibleFeatures?: bigint;
  compatibleFeatures?: bigint;
  autoclearFeatures?: bigint;
  /** log2 of a refcount entry's width in bits. */
  refcountOrder?: number;
  /** Bytes of the header proper (its extensions follow). */
  headerLength?: number;
  /** 0 zlib, 1 zstd (the byte at 104, when the header is longer than 104 bytes). */
  compressionType?: number;
}

/**
 * The header fields in `bytes` (the start of a file), or undefined when they do not start with
 * qcow2's magic. Reads only what `bytes` hold; never throws.
 */
export function parseQcow2Header(bytes: Buffer): Qcow2Header | undefined {
  if (bytes.length < 4 || bytes.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
  const u32 = (at: number): number | undefined => (bytes.length >= at + 4 ? bytes.readUInt32BE(at) : undefined);
  const u64 = (at: number): bigint | undefined => (bytes.length >= at + 8 ? bytes.readBigUInt64BE(at) : undefined);
  const version = u32(4);
  const v3 = version !== undefined && version >= 3;
  const headerLength = v3 ? u32(100) : 72;
  return {
    version,
    backingFileOffset: u64(8),
    backingFileSize: u32(16),
    clusterBits: u32(20),
    size: u64(24),
    cryptMethod: u32(32),
    l1Size: u32(36),
    l1TableOffset: u64(40),
    refcountTableOffset: u64(48),
    refcountTableClusters: u32(56),
    nbSnapshots: u32(60),
    snapshotsOffset: u64(64),
    incompatibleFeatures: v3 ? u64(72) : 0n,
    compatibleFeatures: v3 ? u64(80) : 0n,
    autoclearFeatures: v3 ? u64(88) : 0n,
    refcountOrder: v3 ? u32(96) : 4,
    headerLength,
    compressionType: headerLength === undefined ? undefined : headerLength > 104 ? (bytes.length > 104 ? bytes[104] : undefined) : 0,
  };
}
