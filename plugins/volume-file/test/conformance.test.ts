import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { volumeDriverSuite } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';

volumeDriverSuite('FileVolumeDriver', {
  factory: async () => new FileVolumeDriver({ directory: await mkdtemp(join(tmpdir(), 'cairn-volume-file-')) }),
  dispose: async (driver) => rm((driver as FileVolumeDriver).directory, { recursive: true, force: true }),
  capabilities: new FileVolumeDriver({ directory: '/nonexistent' }).capabilities,
  // A second instance on the same directory: its own image locks, as another process has.
  peer: { factory: async (driver) => new FileVolumeDriver({ directory: (driver as FileVolumeDriver).directory }) },
});
