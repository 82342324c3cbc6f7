import { afterEach, describe, expect, it } from 'vitest';
import { CairnError } from '@cairn/core';
import type { Qcow2VolumeDriver } from '../src/index.js';
import { disposeDriver, freshDriver, MiB, missingQemu, pattern } from './helpers.js';

// A detach whose flush gets an NBD error reply (EIO here; ENOSPC alike) from a daemon that still
// runs fails, and the attachment stays: its export and node stay accounted for, and a retry finishes.

let driver: Qcow2VolumeDriver | undefined;

afterEach(async () => {
  if (driver) await disposeDriver(driver);
  driver = undefined;
});

interface Internals {
  runtime: { running: () => Promise<{ qmp: { execute: (c: string) => Promise<Array<{ id: string }>> } } | undefined> };
}

describe.skipIf(missingQemu.length > 0)('detach whose flush fails', () => {
  it('keeps the attachment until a retried detach tears it down', async () => {
    const d = (driver = await freshDriver());
    const v = await d.createVolume({ size: 8 * MiB });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, pattern(4096, 1));
    const flush = a.device.flush.bind(a.device);
    let fail = true;
    a.device.flush = async () => {
      if (!fail) return flush();
      fail = false; // one error reply, as the NBD client reports it
      throw new CairnError('UNAVAILABLE', 'flush failed with EIO', { driver: 'nbd', details: { nbdError: 5, nbdErrorName: 'EIO' } });
    };
    await expect(d.detach(a.id)).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { nbdError: 5 } });

    // Still attached: one writable export, and a second rw attach is refused.
    const exports = async (): Promise<number> => (await (await (d as unknown as Internals).runtime.running())!.qmp.execute('query-block-exports')).length;
    expect(await exports()).toBe(1);
    await expect(d.attach({ kind: 'volume', id: v.id }, 'rw')).rejects.toMatchObject({ code: 'BUSY' });
    expect((await d.getVolume(v.id)).status).toBe('in-use');

    await d.detach(a.id); // the retry flushes and tears down
    expect(await exports()).toBe(0);
    await expect(a.device.write(0, pattern(4096, 2))).rejects.toThrow(); // the old device is closed
    const b = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    expect(Buffer.from(await b.device.read(0, 4096)).equals(pattern(4096, 1))).toBe(true);
    await d.detach(b.id);
    await d.deleteVolume(v.id);
  });
});
