import { CairnError, pluginModule } from '@cairn/core';
import { Qcow2VolumeDriver } from './qcow2-volume-driver.js';

export { Qcow2VolumeDriver, type Qcow2VolumeDriverOptions } from './qcow2-volume-driver.js';
export { CLUSTER } from './qemu-img.js';

const optionalString = (options: Record<string, unknown>, key: string): string | undefined => {
  const v = options[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.trim() === '') throw new CairnError('INVALID_INPUT', `option \`${key}\` must be a non-empty string`, { driver: 'qcow2' });
  return v;
};

const optionalPositive = (options: Record<string, unknown>, key: string): number | undefined => {
  const v = options[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new CairnError('INVALID_INPUT', `option \`${key}\` must be a positive number`, { driver: 'qcow2' });
  return v;
};

/**
 * The `qcow2` volume driver as a plugin. Options: `directory` (string, required); `runtimeDir`,
 * `qemuImg`, `qemuStorageDaemon` (strings, optional), `commandTimeoutMs`, `qemuImgTimeoutMs`,
 * `qemuImgStallMs` (positive numbers, optional); see Qcow2VolumeDriverOptions.
 * `INVALID_INPUT` names the option that is wrong.
 */
export const qcow2VolumeModule = pluginModule({
  volumeDrivers: [
    {
      name: 'qcow2',
      description: 'qcow2 images served by one qemu-storage-daemon (QMP + NBD), fleecing views, dirty-bitmap changed-block tracking',
      create: async (options) => {
        const o = options ?? {};
        const directory = o.directory;
        if (typeof directory !== 'string' || directory.trim() === '') {
          throw new CairnError('INVALID_INPUT', 'option `directory` is required and must be a non-empty string', { driver: 'qcow2' });
        }
        return new Qcow2VolumeDriver({
          directory,
          runtimeDir: optionalString(o, 'runtimeDir'),
          qemuImg: optionalString(o, 'qemuImg'),
          qemuStorageDaemon: optionalString(o, 'qemuStorageDaemon'),
          commandTimeoutMs: optionalPositive(o, 'commandTimeoutMs'),
          qemuImgTimeoutMs: optionalPositive(o, 'qemuImgTimeoutMs'),
          qemuImgStallMs: optionalPositive(o, 'qemuImgStallMs'),
        });
      },
    },
  ],
});
