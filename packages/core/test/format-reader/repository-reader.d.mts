// Types of repository-reader.mjs, for the TypeScript tests that use it.

export declare const READER_VERSION: number;

export declare class FormatError extends Error {
  readonly code: 'CORRUPT' | 'NOT_FOUND' | 'NOT_SUPPORTED' | 'INVALID_INPUT';
}

export interface BackupSummary {
  backupId: string;
  volumeId: string;
  size: number;
  parentId: string | undefined;
  createdAt: string;
  /** From the backup's catalog record; undefined when it has none. */
  status: string | undefined;
}

export interface RestoreSummary {
  size: number;
  chunks: number;
  zeroChunks: number;
  /** Blobs read per envelope type: 0 none, 1 zstd, 2 lz4, 3 gzip. */
  blobTypes: [number, number, number, number];
}

export interface IndexEntry {
  packId: string;
  offset: number;
  length: number;
  rawLength: number;
}

export interface RepositoryReader {
  readonly config: Record<string, any>;
  /** The repository's objects: `pathOf(key)` is the file that holds `key`. */
  readonly objects: { pathOf(key: string): string };
  /** chunk id → where its blob is. */
  readonly index: Map<string, IndexEntry>;
  listBackups(): Promise<BackupSummary[]>;
  readRecord(backupId: string): Promise<Record<string, any> | undefined>;
  readManifest(backupId: string): Promise<Record<string, any>>;
  restore(backupId: string, outPath: string): Promise<RestoreSummary>;
}

export declare function checkConfig(config: unknown): void;

export declare function openRepository(dir: string, options?: { passphrase?: string }): Promise<RepositoryReader>;
