import { hasCode } from '../errors.js';
import type { Repository } from './repository.js';

/**
 * Whether backup `backupId`'s manifest is gone from the store: a head of it is `NOT_FOUND`
 * (Repository.assertManifest). For a backup listed a moment ago whose manifest or page read came
 * back `NOT_FOUND`: deletes take no lock, so it was deleted since the listing. False when the
 * manifest is there, and when the head fails otherwise (nothing proves it gone).
 */
export async function manifestGone(repo: Repository, backupId: string): Promise<boolean> {
  try {
    await repo.assertManifest(backupId);
    return false;
  } catch (err) {
    return hasCode(err, 'NOT_FOUND');
  }
}
