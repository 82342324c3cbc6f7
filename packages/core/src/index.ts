import 'reflect-metadata';

export * from './errors.js';
export type * from './contracts/block-device.js';
export type * from './contracts/volume-driver.js';
export type * from './contracts/backup-service.js';
export type * from './contracts/object-store.js';
export type * from './contracts/catalog.js';
export { BACKUP_STATUSES, SHARED_READERS_OWNER } from './contracts/records.js';
export type * from './contracts/records.js';
export type { ProgressEvent, ProgressSink } from './contracts/progress.js';

export { BaseBlockDevice } from './drivers/base-block-device.js';
export { PassThroughDevice } from './util/pass-through-device.js';
export { assertReadInto, checkExtents } from './drivers/device-checks.js';
export { attachConflict } from './drivers/attach-rule.js';
export { isImageStamp, sameStamp, settledStampOf, stampOf, type ImageStamp } from './drivers/image-stamp.js';
export { CLOCK_PROBE, fileSystemClock, type StampClock } from './drivers/stamp-clock.js';

export * from './di/tokens.js';
export { pluginModule, type PluginContributions } from './di/plugin-module.js';
export { DriverRegistry } from './di/registry.js';

export * from './flow/backup-manager.js';
export type { Job, JobKind, JobQueuePlace } from './flow/jobs.js';
export { InProcessVolumeLocks, type VolumeLocks } from './flow/locks.js';
export { TEMP_SNAPSHOT_PREFIX, type RecoveryReport } from './flow/recovery.js';
export { IMPORT_CLAIM_KEY, IMPORT_INTERRUPTED, importClaimOf, isInterruptedImport } from './flow/import-claim.js';
export { assertCallerVolumeMetadata, assertMetadataChange, CAIRN_METADATA_PREFIX, METADATA_MAX_LENGTH, type VolumeMetadataChange } from './flow/volume-metadata.js';

export { MemoryVolumeDriver, type MemoryVolumeDriverOptions } from './memory/memory-volume-driver.js';
export { MemoryObjectStore } from './memory/memory-object-store.js';
export { MemoryBackupService } from './memory/memory-backup-service.js';
export { MemoryCatalog } from './memory/memory-catalog.js';
export { memoryModule } from './memory/memory-module.js';

export * from './util/extents.js';
export * from './util/validate.js';
export { knownOptions, optionError } from './util/driver-options.js';
export { KeyedMutex } from './util/keyed-mutex.js';
export { withRetries } from './util/retry.js';
export { releaseSharedBuffers } from './util/buffer-pool.js';
export { RateBudget, throttleReads } from './util/read-rate.js';
export { untilAborted } from './util/until-aborted.js';
export { onDeadline, type DeadlineOptions } from './util/deadline.js';
export { assertDataWithinFile, assertDataWithinFiles, type ImageDataFile, type ImageEndProbe, type ImageMapProbe, type QemuCheckReport } from './util/image-data-end.js';
export { assertQcow2MetadataWithinFile, type Qcow2MetadataProbe, type Qcow2Structure } from './util/qcow2-metadata-end.js';
export { parseQcow2Header, QCOW2_MAGIC, type Qcow2Header } from './util/qcow2-header.js';
export { runBounded, type RunBound, type RunOptions as BoundedRunOptions, type RunResult as BoundedRunResult } from './util/bounded-run.js';
export { newId, nowIso } from './util/clock.js';
export { currentOwner, isThisProcess, ownerLocation, ownerMayBeAlive, pidExists, processStartTime, type OwnerLocation, type ProcessOwner } from './util/process-owner.js';
export { ordinal } from './util/order.js';
export { BACKUP_SORT_KEYS, MAX_BACKUP_PAGE_LIMIT, parseBackupSort, parsePageLimit } from './util/backup-page.js';

export { Repository, type InitOptions, type OpenOptions } from './repository/repository.js';
export { chunkSizeProblem, compressionProblem, packSizeProblem } from './repository/config-check.js';
export { defaultChunkWorkers, MAX_DEFAULT_CHUNK_WORKERS } from './repository/chunk-processor.js';
export { noSpaceErrno } from './util/no-space.js';
export { ChunkedBackupService, type ChunkedServiceOptions, type RepositoryStats } from './repository/chunked-backup-service.js';
export { RepositoryCatalog } from './repository/repository-catalog.js';
export type { GcOptions, GcReport } from './repository/garbage-collector.js';
export type { LockInfo, LockKind } from './repository/repository-locks.js';
export { FORMAT_NAME, FORMAT_VERSION, Keys as RepositoryKeys, type Manifest, type RepositoryConfig } from './repository/format.js';
export { BackupReader, type BackupReadOptions, type BackupReaderOpenOptions, type BackupReaderOptions } from './repository/backup-reader.js';
export { ChunkList } from './repository/chunk-list.js';
export { ChunkMap, ChunkWindow, PAGE_CHUNKS } from './repository/chunk-map.js';
export { isNoHardLinks, linkIfAbsent, openOwnerOnly, syncDir, tempPathBeside, writeFileAtomic, writeNewFileDurably, type NewFileOptions } from './util/durable-file.js';
export { makeDirectories, type MakeDirectoriesOptions } from './util/make-directories.js';
export { readBounded } from './util/read-bounded.js';
export { writeFully, type PositionalWriter, type WriteFullyOptions } from './util/write-fully.js';
export { readFully, type PositionalReader, type ReadFullyOptions } from './util/read-fully.js';
export { cutText, escapedCut, escapedText, quotedCut } from './util/cut-text.js';
export { isZero } from './util/zero-bytes.js';
export { alignedBuffer, alignPad, directReadSpan, isDirectIoReady, openDirect, writeDirect, COPY_ALIGN, DIRECT_IO_ALIGN } from './util/direct-io.js';
export * from './drivers/sidecar-records.js';
export { SidecarStore, toDamagedVolume, type DamagedSidecar, type SidecarKind, type SidecarListing, type SidecarStoreOptions } from './drivers/sidecar-store.js';
