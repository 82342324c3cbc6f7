import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Attachment } from '@cairn/core';
import { FileVolumeDriver } from '@cairn/volume-file';

/**
 * A private sparse volume in a temporary directory (a `file` driver of its own), where an
 * archive's data is assembled before export or checked before import. Nothing outside the
 * temporary directory is touched; `dispose()` removes it (idempotent).
 */
export class StagingVolume {
  private constructor(
    readonly driver: FileVolumeDriver,
    readonly volumeId: string,
    private readonly dir: string,
  ) {}

  /** `size` must be a positive multiple of 512 (`INVALID_INPUT` otherwise). */
  static async create(size: number): Promise<StagingVolume> {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-archive-'));
    try {
      const driver = new FileVolumeDriver({ directory: dir });
      const v = await driver.createVolume({ size, name: 'staging' });
      return new StagingVolume(driver, v.id, dir);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  attach(mode: 'ro' | 'rw'): Promise<Attachment> {
    return this.driver.attach({ kind: 'volume', id: this.volumeId }, mode);
  }

  async dispose(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
