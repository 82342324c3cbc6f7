/**
 * Volume metadata is a plain object of strings (assertVolumeMetadata): an object of another kind,
 * whose entries are none of its own, is refused rather than stored as `{}`.
 */
import { describe, expect, it } from 'vitest';
import { MemoryVolumeDriver, assertVolumeMetadata } from '../src/index.js';

class Labels {
  constructor(readonly tier: string) {}
}

describe('assertVolumeMetadata', () => {
  it('refuses a Map, a Date and a class instance (not_object); takes {}, JSON and a null-prototype object', () => {
    for (const bad of [new Map([['tier', 'gold']]), new Date(0), new Labels('gold'), new Set(['a'])]) {
      let caught: unknown;
      try {
        assertVolumeMetadata(bad, 'metadata');
      } catch (err) {
        caught = err;
      }
      expect(caught, bad.constructor.name).toMatchObject({ code: 'INVALID_INPUT', details: { field: 'metadata', reason: 'not_object' } });
    }
    const bare = Object.assign(Object.create(null) as Record<string, string>, { tier: 'gold' });
    for (const good of [{}, { tier: 'gold' }, JSON.parse('{"tier":"gold"}') as unknown, bare]) expect(() => assertVolumeMetadata(good, 'metadata')).not.toThrow();
  });

  it('a driver refuses a Map for metadata and keeps what the volume had', async () => {
    const driver = new MemoryVolumeDriver();
    await expect(driver.createVolume({ size: 1024 * 1024, metadata: new Map([['tier', 'gold']]) as never })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(await driver.listVolumes()).toEqual([]);
    const v = await driver.createVolume({ size: 1024 * 1024, metadata: { tier: 'gold' } });
    await expect(driver.setVolumeMetadata(v.id, new Map([['tier', 'silver']]) as never)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect((await driver.getVolume(v.id)).metadata).toEqual({ tier: 'gold' });
  });
});
