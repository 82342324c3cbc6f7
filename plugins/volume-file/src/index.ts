import { CairnError, pluginModule } from '@cairn/core';
import { FileVolumeDriver } from './file-volume-driver.js';

export { FileVolumeDriver, type FileVolumeDriverOptions } from './file-volume-driver.js';
export { GRANULARITY } from './file-block-device.js';

/**
 * The `file` volume driver as a plugin. Options: `directory` (string, required) — where images,
 * sidecars and bitmaps live. `INVALID_INPUT` names the option that is wrong.
 */
export const fileVolumeModule = pluginModule({
  volumeDrivers: [
    {
      name: 'file',
      description: 'volumes as sparse raw image files in a directory, with snapshots and changed-block tracking',
      create: async (options) => {
        const directory = options?.directory;
        if (typeof directory !== 'string' || directory.trim() === '') {
          throw new CairnError('INVALID_INPUT', 'option `directory` is required and must be a non-empty string', { driver: 'file' });
        }
        return new FileVolumeDriver({ directory });
      },
    },
  ],
});
