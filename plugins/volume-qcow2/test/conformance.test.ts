import { volumeDriverSuite } from '@cairn/conformance';
import { Qcow2VolumeDriver } from '../src/index.js';
import { disposeDriver, freshDriver } from './helpers.js';

// One driver (so one qemu-storage-daemon, ~20 ms to start) per case: the suite needs empty state.
volumeDriverSuite('Qcow2VolumeDriver', {
  factory: freshDriver,
  dispose: (driver) => disposeDriver(driver as Qcow2VolumeDriver),
  capabilities: new Qcow2VolumeDriver({ directory: '/nonexistent' }).capabilities,
  volumeSize: 4 * 1024 * 1024,
  // A second instance on the same directory has its own daemon, and qemu's image locks keep the
  // two daemons apart: an image open in one (always writable) cannot be opened by the other, so
  // read-only attachments are not shared between instances (the second one is BUSY).
  peer: {
    factory: async (driver) => new Qcow2VolumeDriver({ directory: (driver as Qcow2VolumeDriver).directory }),
    dispose: (peer) => (peer as Qcow2VolumeDriver).close(),
    sharesReadOnly: false,
  },
});
