import { CairnError } from '../errors.js';

/**
 * Distinct chunks fetched and checked at a time by a walk over many chunks (verify, GC's check of
 * the copies it keeps): what the fetcher plans and holds per chunk (~300 bytes) is held for this
 * many only, 2 GiB of data at the default chunk size.
 */
export const FETCH_BATCH = 16_384;

/**
 * Splits `ids` into consecutive arrays of at most `size` ids, in the order given, holding one at
 * a time (the caller fetches it before the next is made). `size` must be a positive integer (else `INTERNAL`).
 */
export function* batches(ids: Iterable<string>, size: number = FETCH_BATCH): Generator<string[]> {
  if (!Number.isInteger(size) || size < 1) throw new CairnError('INTERNAL', `fetch batch size must be a positive integer, not ${size}`);
  let batch: string[] = [];
  for (const id of ids) {
    batch.push(id);
    if (batch.length === size) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}
