import type { BackupRecord } from '../contracts/records.js';

/**
 * The mark of an archive import's claim (`backup import`): the claimed record's `serviceData`
 * carries `importClaim`, a token of that one import. A backup's service copies its job's record
 * into what it stores (a repository's manifest `record`), so the data an import wrote names the
 * claim it was written for. The import's record replaces `serviceData` once it is `available`.
 */
export const IMPORT_CLAIM_KEY = 'importClaim';

/**
 * The fail reason recovery gives a `creating` import claim whose process is gone: an import of
 * the same archive into the same target replaces such a record (the archive importer).
 */
export const IMPORT_INTERRUPTED = 'INTERNAL: import interrupted by a restart (importing the archive again replaces this record)';

/** The import claim's token `record` (or a record a service stored from it) carries; undefined when it is no import's claim. */
export function importClaimOf(record: Pick<BackupRecord, 'serviceData'> | undefined): string | undefined {
  const token = record?.serviceData?.[IMPORT_CLAIM_KEY];
  return typeof token === 'string' && token !== '' ? token : undefined;
}

/** Whether `record` is an import's claim that recovery settled: `error`, marked, with IMPORT_INTERRUPTED. */
export function isInterruptedImport(record: BackupRecord): boolean {
  return record.status === 'error' && record.failReason === IMPORT_INTERRUPTED && importClaimOf(record) !== undefined;
}
