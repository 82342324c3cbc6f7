import type { BackupRecord } from '@cairn/core';

/**
 * The backup archive (`cairn backup export --archive`): a POSIX tar written and read with
 * tar-stream, entries in this order —
 *   `cairn-archive.json`  the ArchiveManifest below (always first)
 *   `data/<16 hex digits>` the bytes of one non-zero chunk, named by its offset (ascending)
 *   `vm-config`            the VM configuration kept with the backup, when there is one
 *   `SHA256SUMS`           `<sha256>  <name>` for every entry above (always last)
 * Zero chunks are absent: the volume reads as zeros there. docs/cli.md specifies it too.
 */
export const ARCHIVE_FORMAT = 'cairn-archive/1';
export const MANIFEST_NAME = 'cairn-archive.json';
export const SUMS_NAME = 'SHA256SUMS';
export const VM_CONFIG_NAME = 'vm-config';
/** Bytes per data entry (the last of a volume may be shorter). */
export const ARCHIVE_CHUNK = 4 * 1024 * 1024;
/**
 * What an archived record's id may be: it names catalog and repository objects. It starts with a
 * letter or digit: the REST API's paths take no other (api/routing.ts), and the CLI would read a
 * leading `-` as an option.
 */
export const RECORD_ID = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;
/** Largest metadata entry (manifest, sums, vm-config) a reader accepts; the writer writes none larger. */
export const MAX_METADATA_BYTES = 64 * 1024 * 1024;

export interface ArchiveChunk {
  /** Entry name, `data/` + the offset as 16 lowercase hex digits. */
  name: string;
  offset: number;
  length: number;
  /** sha256 of the entry's bytes, hex. */
  sha256: string;
}

export interface ArchiveManifest {
  format: typeof ARCHIVE_FORMAT;
  createdAt: string;
  /** The backup's record as exported (status, service data and checkpoint stripped). */
  record: Omit<BackupRecord, 'serviceData' | 'checkpointId' | 'status'>;
  /** Logical size of the backup in bytes. */
  size: number;
  chunks: ArchiveChunk[];
  /** Whether a `vm-config` entry follows the data. */
  vmConfig: boolean;
}

export const chunkName = (offset: number): string => `data/${offset.toString(16).padStart(16, '0')}`;
