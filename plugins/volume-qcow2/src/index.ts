import { pluginModule } from '@cairn/core';
import { parseQcow2VolumeOptions } from './options.js';
import { Qcow2VolumeDriver } from './qcow2-volume-driver.js';

export { Qcow2VolumeDriver, type Qcow2VolumeDriverOptions } from './qcow2-volume-driver.js';
export { CLUSTER } from './qemu-img.js';

/**
 * The `qcow2` volume driver as a plugin. Options: `directory` (string, required); `runtimeDir`,
 * `qemuImg`, `qemuStorageDaemon` (strings, optional), `commandTimeoutMs`, `qemuImgTimeoutMs`,
 * `qemuImgStallMs` (positive numbers, optional); see Qcow2VolumeDriverOptions.
 * `INVALID_INPUT` names the option that is wrong, or unknown (parseQcow2VolumeOptions).
 */
export const qcow2VolumeModule = pluginModule({
  volumeDrivers: [
    {
      name: 'qcow2',
      description: 'qcow2 images served by one qemu-storage-daemon (QMP + NBD), fleecing views, dirty-bitmap changed-block tracking',
      create: async (options) => new Qcow2VolumeDriver(parseQcow2VolumeOptions(options)),
    },
  ],
});
