import assert from 'node:assert/strict';
import type { Group } from '../harness.js';
import { registerGroups } from '../harness.js';
import { changedExtentsAcrossInstances } from './cbt-across-instances.js';
import { attachConflicts, attachConflictsAcrossInstances } from './conflicts.js';
import type { VolumeDriverContext, VolumeDriverSuiteOptions } from './context.js';
import { allocatedExtents, changedExtents, changedExtentsOfSnapshots, changedExtentsRefusals, changedExtentsWhileWriting } from './extents.js';
import { volumeIo } from './io.js';
import { volumeLifecycle } from './lifecycle.js';
import { volumeMetadata } from './metadata.js';
import { snapshotCases, snapshotRefusals } from './snapshots.js';
import type { VolumeDriverCapabilities } from '@cairn/core';

/** The driver declares what the suite was told, and exposes exactly the interfaces it declares. */
export function declaredCapabilities(caps: VolumeDriverCapabilities): Group<VolumeDriverContext> {
  return {
    name: 'declared capabilities',
    cases: [
      {
        name: 'capabilities are data that match the optional interfaces present',
        async run({ driver }) {
          assert.deepEqual(driver.capabilities, caps, 'driver.capabilities differs from what the suite was given');
          assert.equal(!!driver.changedBlockTracking, caps.changedBlockTracking, 'changedBlockTracking presence');
          assert.equal(!!driver.quiesce, caps.quiesce, 'quiesce presence');
          assert.equal(!!driver.flowOverride, caps.flowOverride, 'flowOverride presence');
          assert.equal(typeof driver.setVolumeMetadata === 'function', caps.volumeMetadata, 'setVolumeMetadata presence');
          assert.equal(typeof driver.name, 'string');
        },
      },
    ],
  };
}

/**
 * Picks the groups a driver's declared capabilities call for. A declared capability runs its
 * cases; a missing one runs the opposite case (the call fails with NOT_SUPPORTED), never a skip.
 * With `peer` (the suite has a second instance on the same volumes), the attach conflicts also
 * run across the two instances, and with changedBlockTracking, changes made through one instance
 * are checked as seen by the other.
 */
export function volumeDriverGroups(caps: VolumeDriverCapabilities, peer?: { sharesReadOnly?: boolean }): Group<VolumeDriverContext>[] {
  const groups = [volumeLifecycle];
  if (caps.volumeMetadata) groups.push(volumeMetadata);
  if (caps.attach) groups.push(volumeIo, attachConflicts(caps), allocatedExtents);
  if (caps.attach && peer) groups.push(attachConflictsAcrossInstances((peer.sharesReadOnly ?? true) && caps.multiAttachReadOnly, caps.snapshots));
  groups.push(caps.snapshots ? snapshotCases : snapshotRefusals);
  if (caps.attach) groups.push(caps.changedBlockTracking ? changedExtents : changedExtentsRefusals);
  if (caps.attach && caps.changedBlockTracking && caps.snapshots) groups.push(changedExtentsOfSnapshots, changedExtentsWhileWriting);
  if (caps.attach && caps.changedBlockTracking && peer) groups.push(changedExtentsAcrossInstances);
  return [declaredCapabilities(caps), ...groups];
}

/** Registers the whole volume-driver suite with vitest. */
export function volumeDriverSuite(title: string, options: VolumeDriverSuiteOptions & { capabilities: VolumeDriverCapabilities }): void {
  const { peer } = options;
  registerGroups(title, volumeDriverGroups(options.capabilities, peer), {
    setup: async () => {
      const driver = await options.factory();
      const ctx: VolumeDriverContext = { driver, volumeSize: options.volumeSize ?? 4 * 1024 * 1024 };
      if (peer) {
        try {
          ctx.peer = await peer.factory(driver);
        } catch (err) {
          await options.dispose?.(driver);
          throw err;
        }
      }
      return ctx;
    },
    teardown: async (ctx) => {
      try {
        if (ctx.peer) await peer?.dispose?.(ctx.peer);
      } finally {
        await options.dispose?.(ctx.driver);
      }
    },
    beforeAll: options.beforeAll,
    afterAll: options.afterAll,
    timeout: options.timeout,
  });
}
