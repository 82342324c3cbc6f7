import { afterEach, describe, expect, it } from 'vitest';
import type { Extent } from '@cairn/core';
import type { Qcow2VolumeDriver } from '../src/index.js';
import { disposeDriver, freshDriver, MiB, missingQemu, pattern } from './helpers.js';

// A "changed since" query on a read-write attachment, asked while createCheckpoint is between its
// bitmap transaction (the old newest bitmap disabled, the new one added) and its sidecar write,
// must not merge the old chain alone: it waits for the volume's lock, as the checkpoint call holds it.

let driver: Qcow2VolumeDriver | undefined;

afterEach(async () => {
  if (driver) await disposeDriver(driver);
  driver = undefined;
});

const covers = (extents: Extent[], at: number): boolean => extents.some((e) => e.offset <= at && at < e.offset + e.length);

interface Internals {
  store: { volume: (id: string) => Promise<unknown>; updateVolume: (id: string, fn: (r: unknown) => unknown) => Promise<unknown> };
  runtime: { locks: { run: (key: string, fn: () => Promise<unknown>) => Promise<unknown> } };
}

describe.skipIf(missingQemu.length > 0)('changed extents while a checkpoint is being made', () => {
  it('reports a write made after the new checkpoint was added to the image', async () => {
    const d = (driver = await freshDriver());
    const v = await d.createVolume({ size: 8 * MiB });
    const first = await d.changedBlockTracking.createCheckpoint(v.id);
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(1 * MiB, pattern(4096, 1));
    const { store, runtime } = d as unknown as Internals;

    // Signals, while armed: the query read the sidecar (old code), or asked for the volume's lock.
    let armed = false;
    let signal!: () => void;
    const queryStarted = new Promise<void>((r) => (signal = r));
    const read = store.volume.bind(store);
    store.volume = async (id) => {
      const r = await read(id);
      if (armed) signal();
      return r;
    };
    const run = runtime.locks.run.bind(runtime.locks);
    runtime.locks.run = (key, fn) => {
      if (armed) signal();
      return run(key, fn);
    };

    let query: Promise<Extent[]> | undefined;
    const update = store.updateVolume.bind(store);
    let once = true;
    store.updateVolume = async (id, fn) => {
      if (once) {
        once = false; // createCheckpoint's sidecar write: its bitmap transaction is done
        await a.device.write(5 * MiB, pattern(4096, 2)); // marked in the new bitmap only
        armed = true;
        query = a.device.extents({ kind: 'changed', since: first.id }, { offset: 0, length: 8 * MiB });
        await queryStarted;
        armed = false;
      }
      return update(id, fn);
    };
    await d.changedBlockTracking.createCheckpoint(v.id);
    const seen = await query!;
    expect(covers(seen, 1 * MiB)).toBe(true);
    expect(covers(seen, 5 * MiB)).toBe(true);
    await d.detach(a.id);
  });
});
