import type { BackupRecord, BackupService, BackupServiceCapabilities, VolumeDriver } from '@cairn/core';

export interface BackupServiceContext {
  service: BackupService;
  /** Source and target volumes (the memory reference driver unless the plugin brings its own). */
  volumes: VolumeDriver;
  volumeSize: number;
  /** Damages one stored byte of a backup's data, as disk rot would. */
  corrupt: (backup: BackupRecord) => Promise<void>;
}

export interface BackupServiceSuiteOptions {
  /** Builds a service on empty storage, with a hook that damages one stored byte of a backup. */
  factory: () => Promise<{ service: BackupService; corrupt: (backup: BackupRecord) => Promise<void> }>;
  dispose?: (service: BackupService) => Promise<void>;
  capabilities: BackupServiceCapabilities;
  /** Volume driver for sources and targets. Default: a fresh MemoryVolumeDriver per case. */
  volumes?: () => Promise<VolumeDriver>;
  /** Default 8 MiB. */
  volumeSize?: number;
  beforeAll?: () => Promise<void>;
  afterAll?: () => Promise<void>;
  timeout?: number;
}
