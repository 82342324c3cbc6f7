import { pluginModule } from '@cairn/core';
import { FileVolumeDriver } from './file-volume-driver.js';
import { parseFileVolumeOptions } from './options.js';

export { FileVolumeDriver } from './file-volume-driver.js';
export type { FileVolumeDriverOptions } from './options.js';
export { GRANULARITY } from './file-block-device.js';

/**
 * The `file` volume driver as a plugin. Options: `directory` (string, required) — where images,
 * sidecars and bitmaps live. `INVALID_INPUT` names the option that is wrong, or unknown
 * (parseFileVolumeOptions).
 */
export const fileVolumeModule = pluginModule({
  volumeDrivers: [
    {
      name: 'file',
      description: 'volumes as sparse raw image files in a directory, with snapshots and changed-block tracking',
      create: async (options) => new FileVolumeDriver(parseFileVolumeOptions(options)),
    },
  ],
});
