/**
 * The QMP commands Cairn uses, with their argument and result types (qemu 7.2 QAPI).
 * `QmpClient.execute` is typed by this map; any other command can still be sent untyped.
 */
import type {
  BlockDeviceInfo,
  BlockDirtyBitmapRef,
  BlockExportInfo,
  BlockExportOptionsNbd,
  BlockInfo,
  BlockJobInfo,
  BlockdevBackupArgs,
  BlockdevOptions,
  JobInfo,
  QemuVersionInfo,
  SocketAddressLegacy,
} from './block-types.js';

/** Arguments of `block-dirty-bitmap-add` (also a transaction action). */
export interface BlockDirtyBitmapAddArgs extends BlockDirtyBitmapRef {
  /** Bytes per bit, a power of two; default 64 KiB (or the cluster size). */
  granularity?: number;
  /** Store the bitmap in the qcow2 image on clean close. Default false. */
  persistent?: boolean;
  /** Create it disabled (not recording). Default false. */
  disabled?: boolean;
}

/** Arguments of `block-dirty-bitmap-merge`: `bitmaps` are merged (OR) into `target` on `node`. */
export interface BlockDirtyBitmapMergeArgs {
  node: string;
  target: string;
  /** Source bitmaps: a name on the same node, or a bitmap on another node. */
  bitmaps: (string | BlockDirtyBitmapRef)[];
}

/** One transaction action: `type` plus its `data` (the arguments of the matching command). */
export type TransactionAction =
  | { type: 'abort'; data: Record<string, never> }
  | { type: 'block-dirty-bitmap-add'; data: BlockDirtyBitmapAddArgs }
  | { type: 'block-dirty-bitmap-remove'; data: BlockDirtyBitmapRef }
  | { type: 'block-dirty-bitmap-clear'; data: BlockDirtyBitmapRef }
  | { type: 'block-dirty-bitmap-enable'; data: BlockDirtyBitmapRef }
  | { type: 'block-dirty-bitmap-disable'; data: BlockDirtyBitmapRef }
  | { type: 'block-dirty-bitmap-merge'; data: BlockDirtyBitmapMergeArgs }
  | { type: 'blockdev-backup'; data: BlockdevBackupArgs };

/** Transaction properties. `grouped` makes jobs started by the transaction fail or succeed together. */
export interface TransactionProperties {
  /** Default `individual`. */
  'completion-mode'?: 'individual' | 'grouped';
}

type NoArgs = Record<string, never> | undefined;

/** Command name → `{ args, result }`. `args: undefined` marks a command without arguments. */
export interface QmpCommandMap {
  qmp_capabilities: { args: { enable?: string[] } | undefined; result: Record<string, never> };
  'query-version': { args: NoArgs; result: QemuVersionInfo };
  'query-block': { args: NoArgs; result: BlockInfo[] };
  'query-named-block-nodes': { args: { flat?: boolean } | undefined; result: BlockDeviceInfo[] };
  'blockdev-add': { args: BlockdevOptions; result: Record<string, never> };
  'blockdev-del': { args: { 'node-name': string }; result: Record<string, never> };
  'block-export-add': { args: BlockExportOptionsNbd; result: Record<string, never> };
  /** `mode: safe` (default) refuses while clients are connected; `hard` drops them. Completion is BLOCK_EXPORT_DELETED. */
  'block-export-del': { args: { id: string; mode?: 'safe' | 'hard' }; result: Record<string, never> };
  'query-block-exports': { args: NoArgs; result: BlockExportInfo[] };
  'nbd-server-start': {
    args: { addr: SocketAddressLegacy; 'tls-creds'?: string; 'tls-authz'?: string; 'max-connections'?: number };
    result: Record<string, never>;
  };
  'nbd-server-stop': { args: NoArgs; result: Record<string, never> };
  'block-dirty-bitmap-add': { args: BlockDirtyBitmapAddArgs; result: Record<string, never> };
  'block-dirty-bitmap-remove': { args: BlockDirtyBitmapRef; result: Record<string, never> };
  'block-dirty-bitmap-enable': { args: BlockDirtyBitmapRef; result: Record<string, never> };
  'block-dirty-bitmap-disable': { args: BlockDirtyBitmapRef; result: Record<string, never> };
  'block-dirty-bitmap-clear': { args: BlockDirtyBitmapRef; result: Record<string, never> };
  'block-dirty-bitmap-merge': { args: BlockDirtyBitmapMergeArgs; result: Record<string, never> };
  'query-block-jobs': { args: NoArgs; result: BlockJobInfo[] };
  /** `device` is the job id. Completion is BLOCK_JOB_CANCELLED (or COMPLETED if it finished first). */
  'block-job-cancel': { args: { device: string; force?: boolean }; result: Record<string, never> };
  'blockdev-backup': { args: BlockdevBackupArgs; result: Record<string, never> };
  'job-dismiss': { args: { id: string }; result: Record<string, never> };
  'job-finalize': { args: { id: string }; result: Record<string, never> };
  'job-cancel': { args: { id: string }; result: Record<string, never> };
  'query-jobs': { args: NoArgs; result: JobInfo[] };
  /** All actions apply or none do. */
  transaction: { args: { actions: TransactionAction[]; properties?: TransactionProperties }; result: Record<string, never> };
  /** The daemon replies, then exits; the connection closes right after. */
  quit: { args: NoArgs; result: Record<string, never> };
}

export type QmpCommandName = keyof QmpCommandMap;
export type QmpArgs<K extends QmpCommandName> = QmpCommandMap[K]['args'];
export type QmpResult<K extends QmpCommandName> = QmpCommandMap[K]['result'];

/** Builders for typed transaction actions (plain objects; no I/O). */
export const actions = {
  bitmapAdd: (data: BlockDirtyBitmapAddArgs): TransactionAction => ({ type: 'block-dirty-bitmap-add', data }),
  bitmapRemove: (data: BlockDirtyBitmapRef): TransactionAction => ({ type: 'block-dirty-bitmap-remove', data }),
  bitmapClear: (data: BlockDirtyBitmapRef): TransactionAction => ({ type: 'block-dirty-bitmap-clear', data }),
  bitmapEnable: (data: BlockDirtyBitmapRef): TransactionAction => ({ type: 'block-dirty-bitmap-enable', data }),
  bitmapDisable: (data: BlockDirtyBitmapRef): TransactionAction => ({ type: 'block-dirty-bitmap-disable', data }),
  bitmapMerge: (data: BlockDirtyBitmapMergeArgs): TransactionAction => ({ type: 'block-dirty-bitmap-merge', data }),
  blockdevBackup: (data: BlockdevBackupArgs): TransactionAction => ({ type: 'blockdev-backup', data }),
} as const;
