/**
 * @cairn/conformance — the shared suite every Cairn plugin passes.
 * Each suite is a function over a factory; its groups are exported one by one, and each group's
 * cases are plain functions that reject when the implementation under test is wrong.
 */
export * from './harness.js';
export { fillFileSystem, TmpfsMounts } from './tmpfs.js';
export type * from './volume-driver/context.js';
export { volumeDriverSuite, volumeDriverGroups, declaredCapabilities } from './volume-driver/suite.js';
export { volumeLifecycle } from './volume-driver/lifecycle.js';
export { volumeMetadata } from './volume-driver/metadata.js';
export { volumeIo } from './volume-driver/io.js';
export { snapshotCases, snapshotRefusals } from './volume-driver/snapshots.js';
export { attachConflicts, attachConflictsAcrossInstances } from './volume-driver/conflicts.js';
export { changedExtentsAcrossInstances } from './volume-driver/cbt-across-instances.js';
export { concurrentAttaches } from './volume-driver/concurrent-attach.js';
export { snapshotDataCases } from './volume-driver/snapshot-data.js';
export { assertAllocatedTruthful, zeroFlaggedExtents } from './volume-driver/extent-truth.js';
export { allocatedExtents, changedExtents, changedExtentsOfSnapshots, changedExtentsRefusals, changedExtentsWhileWriting } from './volume-driver/extents.js';
export type * from './object-store/context.js';
export { objectStoreSuite, objectStoreGroups } from './object-store/suite.js';
export { objectReadWrite, objectListing, objectConcurrency, objectReadInto, objectPartWrites, newPrefix } from './object-store/cases.js';
export { objectForeignEntries } from './object-store/foreign-entries.js';
export { objectCancellation, objectCancellationMidCall } from './object-store/cancellation.js';
export { objectPartWriteRaces } from './object-store/races.js';
export { objectSweepTemp } from './object-store/sweep-temp.js';
export { objectSpaceReserve } from './object-store/space-reserve.js';
export type * from './backup-service/context.js';
export { backupServiceSuite, backupServiceGroups } from './backup-service/suite.js';
export { backupRoundTrip, backupVerify } from './backup-service/roundtrip.js';
export { backupProgress } from './backup-service/progress.js';
export { backupAssertStored } from './backup-service/stored.js';
export { incrementalCases, dependentChainCases, independentBackupCases, incrementalRefusals } from './backup-service/incremental.js';
export { newRecord, takeBackup, restoreBytes, readVolume, writeVolume, fillRealistic } from './backup-service/helpers.js';
export type * from './catalog/context.js';
export { catalogSuite, catalogGroups } from './catalog/suite.js';
export { catalogConditionalWrites, catalogConcurrency, catalogRecord, catalogSections } from './catalog/cases.js';
export { catalogIntentConcurrency, catalogIntents } from './catalog/intent-cases.js';
export { catalogListings } from './catalog/listing-cases.js';
export { catalogPaging } from './catalog/paging-cases.js';
