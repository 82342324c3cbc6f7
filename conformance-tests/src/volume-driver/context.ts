import type { VolumeDriver } from '@cairn/core';

/** What a volume-driver suite case receives. */
export interface VolumeDriverContext {
  driver: VolumeDriver;
  /** Size used for test volumes, in bytes. */
  volumeSize: number;
  /** A second instance on the same volumes as `driver`, when the suite was given `peer`. */
  peer?: VolumeDriver;
}

/** How to build a second driver instance on the same volumes, as another process would have. */
export interface VolumeDriverPeerOptions {
  /** Builds another instance on the state of `driver` (the same directory…). Called once per case. */
  factory: (driver: VolumeDriver) => Promise<VolumeDriver>;
  /** Releases the peer (stop its daemons); called before the driver's own dispose. */
  dispose?: (peer: VolumeDriver) => Promise<void>;
  /**
   * Whether read-only attachments of one volume may exist in both instances at once. Default
   * true. False for a driver whose instances exclude each other from a volume altogether (then
   * the second read-only attach must fail with BUSY).
   */
  sharesReadOnly?: boolean;
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
  /**
   * A second driver instance on the same volumes. When given, the attach-conflict cases also run
   * across the two instances (an attach in one next to an attachment in the other).
   */
  peer?: VolumeDriverPeerOptions;
}
