import { volumeDriverSuite } from '@cairn/conformance';
import { Qcow2VolumeDriver } from '../src/index.js';
import { disposeDriver, freshDriver } from './helpers.js';

// One driver (so one qemu-storage-daemon, ~20 ms to start) per case: the suite needs empty state.
volumeDriverSuite('Qcow2VolumeDriver', {
  factory: freshDriver,
  dispose: (driver) => disposeDriver(driver as Qcow2VolumeDriver),
  capabilities: new Qcow2VolumeDriver({ directory: '/nonexistent' }).capabilities,
  volumeSize: 4 * 1024 * 1024,
});
