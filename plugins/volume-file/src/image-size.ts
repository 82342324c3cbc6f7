import { truncate, type FileHandle } from 'node:fs/promises';
import { CairnError } from '@cairn/core';

/**
 * Sets an image's size (growth is sparse). Failures caused by the size get stable codes: EFBIG
 * (more than the file system allows for one file) → `INVALID_INPUT`; ENOSPC/EDQUOT → `UNAVAILABLE`.
 * The size is unchanged when it fails.
 */
export async function resizeImage(image: string | FileHandle, size: number, driver: string): Promise<void> {
  try {
    if (typeof image === 'string') await truncate(image, size);
    else await image.truncate(size);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'EFBIG') throw new CairnError('INVALID_INPUT', `a volume of ${size} bytes is larger than the file system allows for one file`, { driver, cause: err, details: { size } });
    if (code === 'ENOSPC' || code === 'EDQUOT') throw new CairnError('UNAVAILABLE', `no space for a volume of ${size} bytes`, { driver, cause: err, details: { size } });
    throw err;
  }
}
