import type { VolumeDriver } from '@cairn/core';

/** What a volume-driver suite case receives. */
export interface VolumeDriverContext {
  driver: VolumeDriver;
  /** Size used for test volumes, in bytes. */
  volumeSize: number;
}

export interface VolumeDriverSuiteOptions {
  /** Builds a driver on fresh, empty state. Called once per case. */
  factory: () => Promise<VolumeDriver>;
  /** Tears a driver down (delete directories, stop daemons). */
  dispose?: (driver: VolumeDriver) => Promise<void>;
  /** Test volume size in bytes; a multiple of 1 MiB, at least 2 MiB. Default 4 MiB. */
  volumeSize?: number;
  beforeAll?: () => Promise<void>;
  afterAll?: () => Promise<void>;
  /** Per-case timeout in ms. Default 60 000. */
  timeout?: number;
}
