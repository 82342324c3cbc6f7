// `volume metadata set` and `volume create -m` take key=value pairs: every key is kept as an own
// entry, `__proto__` and `constructor` included (docs/api.md: any key), and it reaches the volume.
import { describe, expect, it } from 'vitest';
import { BackupManager, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver } from '@cairn/core';
import { metadataPairs } from '../src/commands/volume-metadata.js';

describe('metadataPairs', () => {
  it('keeps __proto__ and constructor as own string entries, later pairs overwriting earlier ones', () => {
    const m = metadataPairs(['__proto__=p', 'constructor=c', 'k=v', 'k=w', 'e=']);
    expect(Object.entries(m)).toEqual([
      ['__proto__', 'p'],
      ['constructor', 'c'],
      ['k', 'w'],
      ['e', ''],
    ]);
    expect(Object.getPrototypeOf(m)).toBe(Object.prototype);
  });

  it('the pairs reach the volume through the manager, __proto__ included', async () => {
    const volumes = new MemoryVolumeDriver();
    const manager = new BackupManager({ volumes, targets: { memory: new MemoryBackupService() }, catalog: new MemoryCatalog() });
    const v = await volumes.createVolume({ size: 1 << 20, name: 'w' });
    const shown = await manager.updateVolumeMetadata(v.id, { set: metadataPairs(['__proto__=p', 'k=v']) });
    expect(JSON.stringify(shown.metadata)).toBe('{"__proto__":"p","k":"v"}');
  });

  it('refuses a pair without = or with an empty key', () => {
    expect(() => metadataPairs(['novalue'])).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', details: { field: 'metadata', reason: 'not_pair' } }));
    expect(() => metadataPairs(['=v'])).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
  });
});
