/**
 * TypeScript shapes of the QAPI block, export and job types used by Cairn, as qemu 7.2 declares
 * them (checked with `query-qmp-schema` on this machine). Optional members are those QAPI marks
 * optional; unions list the variants Cairn uses and keep an open fallback for the rest.
 */

/** `qemu` part of `query-version`. */
export interface QemuVersionTriple {
  major: number;
  minor: number;
  micro: number;
}

/** Result of `query-version`, also the `version` of the QMP greeting. */
export interface QemuVersionInfo {
  qemu: QemuVersionTriple;
  /** Distribution package string, e.g. `Debian 1:7.2+dfsg-7`. */
  package: string;
}

/** A reference to a block node: its node-name, or inline options for a new node. */
export type BlockdevRef = string | BlockdevOptions;

interface BlockdevOptionsBase {
  /** Name of the new node; qemu generates one when omitted (Cairn always names its nodes). */
  'node-name'?: string;
  discard?: 'ignore' | 'unmap';
  cache?: { direct?: boolean; 'no-flush'?: boolean };
  'read-only'?: boolean;
  'auto-read-only'?: boolean;
  'force-share'?: boolean;
  'detect-zeroes'?: 'off' | 'on' | 'unmap';
}

/** `driver: file` — a host file (the protocol layer under a format node). */
export interface BlockdevOptionsFile extends BlockdevOptionsBase {
  driver: 'file';
  filename: string;
  locking?: 'auto' | 'on' | 'off';
  aio?: 'threads' | 'native' | 'io_uring';
}

/** `driver: qcow2` — a qcow2 format node over `file`, optionally with a `backing` node (or null for none). */
export interface BlockdevOptionsQcow2 extends BlockdevOptionsBase {
  driver: 'qcow2';
  file: BlockdevRef;
  backing?: BlockdevRef | null;
  'lazy-refcounts'?: boolean;
  'cache-size'?: number;
  'data-file'?: BlockdevRef;
}

/** `driver: raw` — a raw format node, optionally a window `[offset, offset+size)` of `file`. */
export interface BlockdevOptionsRaw extends BlockdevOptionsBase {
  driver: 'raw';
  file: BlockdevRef;
  offset?: number;
  size?: number;
}

/** `driver: null-co` — a node that discards writes (reads return zeroes with `read-zeroes`). */
export interface BlockdevOptionsNull extends BlockdevOptionsBase {
  driver: 'null-co';
  size?: number;
  'read-zeroes'?: boolean;
}

/** `driver: copy-before-write` — filter that copies old data to `target` before guest writes. */
export interface BlockdevOptionsCopyBeforeWrite extends BlockdevOptionsBase {
  driver: 'copy-before-write';
  file: BlockdevRef;
  target: BlockdevRef;
  bitmap?: BlockDirtyBitmapRef;
  'on-cbw-error'?: 'break-guest-write' | 'break-snapshot';
  'cbw-timeout'?: number;
}

/** `driver: snapshot-access` — read-only point-in-time view over a copy-before-write filter. */
export interface BlockdevOptionsSnapshotAccess extends BlockdevOptionsBase {
  driver: 'snapshot-access';
  file: BlockdevRef;
}

/** Any other driver: passed through untyped. */
export interface BlockdevOptionsOther extends BlockdevOptionsBase {
  driver: string;
  [option: string]: unknown;
}

/** Arguments of `blockdev-add`. */
export type BlockdevOptions =
  | BlockdevOptionsFile
  | BlockdevOptionsQcow2
  | BlockdevOptionsRaw
  | BlockdevOptionsNull
  | BlockdevOptionsCopyBeforeWrite
  | BlockdevOptionsSnapshotAccess
  | BlockdevOptionsOther;

/** Names a dirty bitmap on a node. */
export interface BlockDirtyBitmapRef {
  node: string;
  name: string;
}

/** One dirty bitmap as reported by query-named-block-nodes / query-block. */
export interface BlockDirtyInfo {
  name?: string;
  /** Number of dirty bytes. */
  count: number;
  /** Bytes per bit (64 KiB by default). */
  granularity: number;
  /** True while the bitmap is enabled (records writes). */
  recording: boolean;
  /** True while an operation (export, job) uses the bitmap; it cannot be changed then. */
  busy: boolean;
  persistent: boolean;
  /** True when the bitmap was not saved cleanly (e.g. after SIGKILL); it cannot be used. */
  inconsistent?: boolean;
}

/** `image` part of BlockDeviceInfo. */
export interface ImageInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'cluster-size'?: number;
  'dirty-flag'?: boolean;
  encrypted?: boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  'backing-image'?: ImageInfo;
  'format-specific'?: { type: string; data: Record<string, unknown> };
}

/** One node of `query-named-block-nodes` (and `inserted` of query-block). */
export interface BlockDeviceInfo {
  file: string;
  'node-name'?: string;
  ro: boolean;
  drv: string;
  backing_file?: string;
  backing_file_depth: number;
  encrypted: boolean;
  detect_zeroes: 'off' | 'on' | 'unmap';
  image: ImageInfo;
  cache: { writeback: boolean; direct: boolean; 'no-flush': boolean };
  write_threshold: number;
  'dirty-bitmaps'?: BlockDirtyInfo[];
  [throttle: string]: unknown;
}

/** One entry of `query-block` (devices with a BlockBackend; qemu-storage-daemon has none). */
export interface BlockInfo {
  device: string;
  qdev?: string;
  type: string;
  removable: boolean;
  locked: boolean;
  inserted?: BlockDeviceInfo;
  tray_open?: boolean;
  'io-status'?: 'ok' | 'failed' | 'nospace';
}

/** Arguments of `block-export-add` with `type: nbd`. */
export interface BlockExportOptionsNbd {
  type: 'nbd';
  /** Export id, unique in the daemon; BLOCK_EXPORT_DELETED carries it. */
  id: string;
  'node-name': string;
  /** Default false. */
  writable?: boolean;
  writethrough?: boolean;
  iothread?: string;
  'fixed-iothread'?: boolean;
  /** NBD export name; defaults to the node name. */
  name?: string;
  description?: string;
  /** Bitmaps offered as `qemu:dirty-bitmap:<name>` contexts; each must be disabled for a read-only export. */
  bitmaps?: (string | BlockDirtyBitmapRef)[];
  /** Offer `qemu:allocation-depth`. Default false. */
  'allocation-depth'?: boolean;
}

/** One entry of `query-block-exports`. */
export interface BlockExportInfo {
  id: string;
  type: 'nbd' | 'vhost-user-blk' | 'fuse' | 'vduse-blk';
  'node-name': string;
  'shutting-down': boolean;
}

/** Address for nbd-server-start (the legacy, `data`-wrapped form). */
export type SocketAddressLegacy =
  | { type: 'unix'; data: { path: string; abstract?: boolean } }
  | { type: 'inet'; data: { host: string; port: string; numeric?: boolean; ipv4?: boolean; ipv6?: boolean } }
  | { type: 'fd'; data: { str: string } };

/** Job states of the generic job model (JOB_STATUS_CHANGE, query-jobs). */
export type JobStatus =
  | 'undefined'
  | 'created'
  | 'running'
  | 'paused'
  | 'ready'
  | 'standby'
  | 'waiting'
  | 'pending'
  | 'aborting'
  | 'concluded'
  | 'null';

export type JobType =
  | 'commit'
  | 'stream'
  | 'mirror'
  | 'backup'
  | 'create'
  | 'amend'
  | 'snapshot-load'
  | 'snapshot-save'
  | 'snapshot-delete';

/** One entry of `query-jobs`. */
export interface JobInfo {
  id: string;
  type: JobType;
  status: JobStatus;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

/** One entry of `query-block-jobs`. */
export interface BlockJobInfo {
  type: string;
  /** The job id (named `device` for history). */
  device: string;
  len: number;
  offset: number;
  busy: boolean;
  paused: boolean;
  speed: number;
  'io-status': 'ok' | 'failed' | 'nospace';
  ready: boolean;
  status: JobStatus;
  'auto-finalize': boolean;
  'auto-dismiss': boolean;
  error?: string;
}

/** Arguments of `blockdev-backup` (also a transaction action). */
export interface BlockdevBackupArgs {
  'job-id'?: string;
  /** Source node. */
  device: string;
  /** Target node. */
  target: string;
  /** `none` with a copy-before-write target gives a point-in-time view (fleecing). */
  sync: 'top' | 'full' | 'none' | 'incremental' | 'bitmap';
  speed?: number;
  bitmap?: string;
  'bitmap-mode'?: 'on-success' | 'never' | 'always';
  compress?: boolean;
  'on-source-error'?: 'report' | 'ignore' | 'enospc' | 'stop' | 'auto';
  'on-target-error'?: 'report' | 'ignore' | 'enospc' | 'stop' | 'auto';
  'auto-finalize'?: boolean;
  'auto-dismiss'?: boolean;
  'filter-node-name'?: string;
  'x-perf'?: { 'use-copy-range'?: boolean; 'max-workers'?: number; 'max-chunk'?: number };
}
