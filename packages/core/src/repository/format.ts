/**
 * The repository's object layout and record shapes. docs/repository-format.md is the
 * specification; this file is its code. Change either only together, and bump FORMAT_VERSION
 * for anything an older reader would misread.
 */
import type { CompressionAlgorithm } from '../contracts/backup-service.js';
import type { BackupRecord, BackupStats } from '../contracts/records.js';
import type { ChunkMap } from './chunk-map.js';

export const FORMAT_NAME = 'cairn-repository';
/**
 * 2: index objects (`index/<indexId>`) name several packs (IndexDoc). Format-1 index objects
 * (`index/<packId>`, one PackIndexDoc each) are still read.
 * 3: every catalog record has an entry under its volume (`catalog/by-volume/…`, see
 * repository-catalog.ts), so a volume's records are found without reading all of them.
 * 4: a manifest names its chunk list's pages (`chunkPages`, `pageChunks`), each stored as a
 * `chunklists/<id>` object (see chunk-map.ts), instead of holding the list inline. Manifests of
 * format 3 and older are still read.
 * 5: a restore to a new volume records its intent as an object of its own
 * (`catalog/new-volumes/<jobId>`, repository-catalog.ts). Nothing an older Cairn reads changed,
 * but it would neither see those intents nor respect them: it could restore into a volume a failed
 * restore left, which recovery then deletes with what it restored.
 * An older repository is upgraded when opened for writing (Repository.upgradeFormat), so that an
 * older Cairn refuses it instead of misreading it or writing records without entries.
 */
export const FORMAT_VERSION = 5;

/** Object keys. Ids are lowercase hex SHA-256 (64 chars) or UUIDs. */
export const Keys = {
  config: 'config',
  pack: (packId: string) => `packs/${packId}`,
  index: (indexId: string) => `index/${indexId}`,
  manifest: (backupId: string) => `manifests/${backupId}`,
  lock: (lockId: string) => `locks/${lockId}`,
  chunkList: (pageId: string) => `chunklists/${pageId}`,
  packs: 'packs/',
  indexes: 'index/',
  manifests: 'manifests/',
  locks: 'locks/',
  chunkLists: 'chunklists/',
} as const;

/** Trailer of every pack: encoded index length (u32 BE) then this magic. */
export const PACK_MAGIC = Buffer.from('CAIRNPK1', 'ascii');
export const PACK_TRAILER = 4 + PACK_MAGIC.length;

/** Blob type byte (first byte of a blob's plaintext envelope). */
export const BlobType = { none: 0, zstd: 1, lz4: 2, gzip: 3 } as const satisfies Record<CompressionAlgorithm, number>;

export interface EncryptionParams {
  kdf: 'scrypt';
  /** scrypt cost parameters. */
  N: number;
  r: number;
  p: number;
  /** base64 salt. */
  salt: string;
  /** The 64-byte master key (32 data + 32 id) sealed with AES-256-GCM under the KDF's key: base64 of nonce|ciphertext|tag. */
  sealedKey: string;
}

/** The `config` object: written once at init (only-if-absent), checked at every open. Never encrypted. */
export interface RepositoryConfig {
  format: typeof FORMAT_NAME;
  version: number;
  /** Repository id (UUID). Exported records name it, so they import only where they belong. */
  id: string;
  createdAt: string;
  /** Chunk size in bytes (power of two). Fixed for the repository's life. */
  chunkSize: number;
  /** Default compression for new chunks. */
  compression: CompressionAlgorithm;
  /** Target pack size in bytes. */
  packSize: number;
  encryption: EncryptionParams | null;
}

/** One blob in a pack, as listed in the pack's index. */
export interface IndexEntry {
  /** Chunk id (hex). */
  id: string;
  /** Byte offset of the blob in the pack. */
  offset: number;
  /** Stored length of the blob. */
  length: number;
  /** Length of the chunk's plaintext. */
  rawLength: number;
}

/** One blob as serialized in an index: [id, offset, length, rawLength]. */
export type BlobTuple = [string, number, number, number];

/** A pack's own index, sealed into its trailer (and, in format 1, also stored as `index/<packId>`). */
export interface PackIndexDoc {
  version: 1;
  blobs: BlobTuple[];
}

/** An index object of format 2: the indexes of several packs, as [packId, blobs] pairs. */
export interface IndexDoc {
  version: 2;
  packs: [string, BlobTuple[]][];
}

/** The manifest of one backup: everything needed to restore it in one pass. */
export interface Manifest {
  version: number;
  backupId: string;
  volumeId: string;
  volumeName: string;
  size: number;
  chunkSize: number;
  parentId?: string;
  createdAt: string;
  /**
   * Chunk id per chunk index, or null for an all-zero chunk. Stored (format 4) as `pageChunks`
   * and `chunkPages`, the ids of the chunk list's pages; format 3 and older held the list
   * inline as `chunks`, a JSON array.
   */
  chunks: ChunkMap;
  volumeMetadata: Record<string, string>;
  /** base64 VM configuration (libvirt XML, OVF…), when given. */
  vmConfig?: string;
  stats: BackupStats;
  /** The record as the manager created it, so list/lookup work from any machine. */
  record: BackupRecord;
}
