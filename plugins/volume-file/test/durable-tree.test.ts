import { readlinkSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileVolumeDriver } from '../src/index.js';
import { dirPerTest } from './helpers.js';

type Sync = (this: FileHandle) => Promise<void>;

/**
 * Records the path of every fsync(2) this process makes through FileHandle.sync (core's syncDir and
 * writeFileAtomic included), read from /proc/self/fd (Linux). The fsyncs themselves still run.
 */
async function watchFsyncs(): Promise<{ synced: string[]; restore: () => void }> {
  const fh = await open('/dev/null', 'r');
  const proto = Object.getPrototypeOf(fh) as { sync: Sync };
  await fh.close();
  const original = proto.sync;
  const synced: string[] = [];
  proto.sync = async function (this: FileHandle) {
    const path = readlinkSync(`/proc/self/fd/${this.fd}`);
    await original.call(this);
    synced.push(path);
  };
  return { synced, restore: () => (proto.sync = original) };
}

/**
 * Contract (SidecarStore: sidecar writes are durable): once createVolume resolves, its sidecar
 * survives a power cut, and so must every directory on its way: the driver's directory and
 * `volumes/`, which the driver made, are durable in their parents (each parent fsynced after the
 * directory was made in it).
 */
describe('FileVolumeDriver makes the directories it creates durable', () => {
  const t = dirPerTest();
  let probe: Awaited<ReturnType<typeof watchFsyncs>>;
  beforeEach(async () => {
    probe = await watchFsyncs();
  });
  afterEach(() => probe.restore());

  it('createVolume in a directory that does not exist yet fsyncs the parent of every directory it made', async () => {
    const base = join(t.dir, 'a');
    const directory = join(base, 'b');
    const driver = new FileVolumeDriver({ directory });
    await driver.createVolume({ size: 1024 * 1024 });
    for (const parent of [t.dir, base, directory]) expect(probe.synced, parent).toContain(parent);
    expect(probe.synced).toContain(join(directory, 'volumes'));
  });
});
