import assert from 'node:assert/strict';
import { MemoryVolumeDriver, type BackupServiceCapabilities } from '@cairn/core';
import type { Group } from '../harness.js';
import { registerGroups } from '../harness.js';
import type { BackupServiceContext, BackupServiceSuiteOptions } from './context.js';
import { dependentChainCases, incrementalCases, incrementalRefusals, independentBackupCases } from './incremental.js';
import { backupProgress } from './progress.js';
import { backupRoundTrip, backupVerify } from './roundtrip.js';
import { backupAssertStored } from './stored.js';

function declared(caps: BackupServiceCapabilities): Group<BackupServiceContext> {
  return {
    name: 'declared capabilities',
    cases: [
      {
        name: 'describe().capabilities match what the suite was given',
        async run({ service }) {
          assert.deepEqual(service.describe().capabilities, caps);
        },
      },
    ],
  };
}

/** Groups for a service's declared capabilities; a missing capability runs its refusal case. */
export function backupServiceGroups(caps: BackupServiceCapabilities): Group<BackupServiceContext>[] {
  const groups = [declared(caps), backupRoundTrip, backupVerify, backupAssertStored, backupProgress];
  if (!caps.incremental) return [...groups, incrementalRefusals];
  return [...groups, incrementalCases, caps.dependentChains ? dependentChainCases : independentBackupCases];
}

/** Registers the backup-service suite with vitest. */
export function backupServiceSuite(title: string, options: BackupServiceSuiteOptions): void {
  registerGroups(title, backupServiceGroups(options.capabilities), {
    setup: async () => {
      const { service, corrupt } = await options.factory();
      const volumes = options.volumes ? await options.volumes() : new MemoryVolumeDriver();
      return { service, corrupt, volumes, volumeSize: options.volumeSize ?? 8 * 1024 * 1024 };
    },
    teardown: async (ctx) => options.dispose?.(ctx.service),
    beforeAll: options.beforeAll,
    afterAll: options.afterAll,
    timeout: options.timeout,
  });
}
