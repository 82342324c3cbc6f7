export type * from './block-types.js';
export { actions, type BlockDirtyBitmapAddArgs, type BlockDirtyBitmapMergeArgs, type QmpArgs, type QmpCommandMap, type QmpCommandName, type QmpResult, type TransactionAction, type TransactionProperties } from './commands.js';
export {
  DEFAULT_EVENT_TIMEOUT_MS,
  type QmpEvent,
  type QmpEventData,
  type QmpEventListener,
  type QmpEventMap,
  type QmpEventName,
  type WaitForEventOptions,
} from './events.js';
/** Moved to @cairn/core (packages/nbd uses it too); still exported here for callers of @cairn/qmp. */
export { onDeadline, type DeadlineOptions } from '@cairn/core';
export { QMP_DRIVER, qmpError, qmpErrorCode, type QmpErrorBody } from './qmp-errors.js';
export {
  MAX_UNIX_SOCKET_PATH_BYTES,
  QmpClient,
  type ExecuteOptions,
  type QmpConnectOptions,
  type QmpGreeting,
  type QmpTarget,
} from './qmp-client.js';
export { MAX_TIMEOUT_MS } from './timeouts.js';
export { assertTmpParentFits, QemuStorageDaemon, type DaemonExit, type QemuStorageDaemonOptions, type StopOptions } from './qemu-storage-daemon.js';
