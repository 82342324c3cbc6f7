// The shared volume-driver conformance groups about device I/O and extents, run through NBD:
// every attachment of a memory volume is served by our NbdServer and reached by an NbdBlockDevice.
import { join } from 'node:path';
import { MemoryVolumeDriver, type AttachMode, type AttachTarget, type Attachment, type VolumeDriver } from '@cairn/core';
import { allocatedExtents, changedExtentsOfSnapshots, registerGroups, volumeIo, volumeLifecycle } from '@cairn/conformance';
import { NbdBlockDevice, NbdServer, blockDeviceBackend } from '../src/index.js';
import { tempDir } from './helpers/peers.js';

let dir: { path: string; remove: () => Promise<void> };
let sockets = 0;

/**
 * Delegates to MemoryVolumeDriver; `attach` puts an NbdServer in front of the memory device and
 * returns an NbdBlockDevice over it, with the checkpoints that exist at attach time as
 * `qemu:dirty-bitmap:<id>` contexts.
 */
class NbdLoopDriver implements Pick<VolumeDriver, 'name' | 'capabilities'> {
  readonly inner = new MemoryVolumeDriver({ name: 'nbd-loop' });
  readonly name = 'nbd-loop';
  readonly capabilities = this.inner.capabilities;
  readonly changedBlockTracking = this.inner.changedBlockTracking;
  private readonly servers = new Map<string, { server: NbdServer; device: NbdBlockDevice }>();

  createVolume = this.inner.createVolume.bind(this.inner);
  deleteVolume = this.inner.deleteVolume.bind(this.inner);
  getVolume = this.inner.getVolume.bind(this.inner);
  listVolumes = this.inner.listVolumes.bind(this.inner);
  extendVolume = this.inner.extendVolume.bind(this.inner);
  createSnapshot = this.inner.createSnapshot.bind(this.inner);
  deleteSnapshot = this.inner.deleteSnapshot.bind(this.inner);
  listSnapshots = this.inner.listSnapshots.bind(this.inner);

  async attach(target: AttachTarget, mode: AttachMode): Promise<Attachment> {
    const a = await this.inner.attach(target, mode);
    const volumeId = target.kind === 'volume' ? target.id : await this.volumeOfSnapshot(target.id);
    const checkpoints = (await this.inner.changedBlockTracking.listCheckpoints(volumeId)).map((c) => c.id);
    const server = new NbdServer({ exports: [{ name: 'v', backend: blockDeviceBackend(a.device, { checkpoints }) }] });
    const path = join(dir.path, `a${++sockets}.sock`);
    await server.listen({ path });
    const device = await NbdBlockDevice.open({
      path,
      exportName: 'v',
      mode,
      driverName: this.name,
      extentGranularity: a.device.extentGranularity,
      metaContexts: ['base:allocation', ...checkpoints.map((c) => `qemu:dirty-bitmap:${c}`)],
    });
    this.servers.set(a.id, { server, device });
    return { ...a, device };
  }

  async detach(id: string): Promise<void> {
    const s = this.servers.get(id);
    this.servers.delete(id);
    if (s) {
      await s.device.close();
      await s.server.close();
    }
    await this.inner.detach(id);
  }

  private async volumeOfSnapshot(snapshotId: string): Promise<string> {
    for (const v of await this.inner.listVolumes()) {
      if ((await this.inner.listSnapshots(v.id)).some((s) => s.id === snapshotId)) return v.id;
    }
    return snapshotId; // unknown: the inner attach already failed with NOT_FOUND
  }
}

// Checkpoints created while a device is attached are not visible to that NBD connection (contexts
// are negotiated at connect), so the `changedExtents` group is exercised only through snapshots.
registerGroups('volume-driver groups through NbdServer + NbdBlockDevice', [volumeLifecycle, volumeIo, allocatedExtents, changedExtentsOfSnapshots], {
  beforeAll: async () => {
    dir = await tempDir('nbd-conf-');
  },
  afterAll: async () => {
    await dir?.remove();
  },
  setup: async () => ({ driver: new NbdLoopDriver() as unknown as VolumeDriver, volumeSize: 4 * 1024 * 1024 }),
});
