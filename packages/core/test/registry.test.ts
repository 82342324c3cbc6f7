import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BackupManager, CairnError, ChunkedBackupService, DriverRegistry, MemoryObjectStore, MemoryVolumeDriver, RepositoryCatalog, memoryModule, pluginModule } from '../src/index.js';
import { expectCode, FAST_KDF, filledVolume, MiB } from './helpers.js';

describe('DriverRegistry', () => {
  it('compose(modules) resolves drivers by plugin name', async () => {
    const registry = DriverRegistry.compose(memoryModule);
    expect(registry.names()).toEqual({ volumeDrivers: ['memory'], backupServices: ['memory'], objectStores: ['memory'] });
    const driver = await registry.createVolumeDriver('memory', { pageSize: 8192 });
    expect(driver).toBeInstanceOf(MemoryVolumeDriver);
    const v = await driver.createVolume({ size: 1 << 20 });
    const a = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
    expect(a.device.extentGranularity).toBe(8192);
    expect((await registry.createBackupService('memory')).describe().name).toBe('memory');
    expect((await registry.objectStore('memory')).name).toBe('memory');
  });

  it('compose(two modules registering one name) fails with CONFLICT at start', () => {
    const twin = pluginModule({ volumeDrivers: [{ name: 'memory', description: 'an impostor', create: async () => new MemoryVolumeDriver() }] });
    expect(() => DriverRegistry.compose(memoryModule, twin)).toThrow(expect.objectContaining({ code: 'CONFLICT' }));
  });

  it('createVolumeDriver(unknown plugin) fails with NOT_FOUND naming the known ones', async () => {
    const registry = DriverRegistry.compose(memoryModule);
    await expect(registry.createVolumeDriver('nope')).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('memory') });
  });

  it('the memory plugins refuse a size option that is no positive power of two with INVALID_INPUT naming it', async () => {
    const registry = DriverRegistry.compose(memoryModule);
    // 3 * 2^31: a bitwise power-of-two test sees only its low 32 bits, one bit set.
    for (const pageSize of [3, 0, -4096, 4096.5, '4096', 3 * 2 ** 31]) {
      await expect(registry.createVolumeDriver('memory', { pageSize }), String(pageSize)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field: 'pageSize' } });
    }
    await expect(registry.createBackupService('memory', { blockSize: 1000 })).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field: 'blockSize' } });
    const driver = await registry.createVolumeDriver('memory', { pageSize: 2 ** 32 });
    expect(driver).toBeInstanceOf(MemoryVolumeDriver);
  });

  it('compose() with no modules is empty, not an error', () => {
    expect(DriverRegistry.compose().names()).toEqual({ volumeDrivers: [], backupServices: [], objectStores: [] });
  });

  it('secret(env:NAME | file:path) reads the value; other forms fail with INVALID_INPUT, missing ones with NOT_FOUND', async () => {
    const registry = DriverRegistry.compose();
    process.env.CAIRN_TEST_SECRET = 's3cret';
    expect(await registry.secret('env:CAIRN_TEST_SECRET')).toBe('s3cret');
    const dir = await mkdtemp(join(tmpdir(), 'cairn-secret-'));
    await writeFile(join(dir, 'key'), 'from-file\n');
    expect(await registry.secret(`file:${join(dir, 'key')}`)).toBe('from-file');
    await expectCode(registry.secret('plain-text'), 'INVALID_INPUT');
    await expectCode(registry.secret('env:CAIRN_UNSET_VARIABLE_X'), 'NOT_FOUND');
    await expectCode(registry.secret(`file:${join(dir, 'absent')}`), 'NOT_FOUND');
    await rm(dir, { recursive: true });
  });
});

describe('DriverRegistry.secret(env:…)', () => {
  it("secret(env:NAME) of a name only Object.prototype has (constructor, __proto__, toString) is NOT_FOUND, never a function or object", async () => {
    const registry = DriverRegistry.compose();
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      await expect(registry.secret(`env:${name}`)).rejects.toMatchObject({ code: 'NOT_FOUND', driver: 'registry' });
    }
  });
});

describe('DriverRegistry and the chunked repository', () => {
  it('createBackupService(an object-store plugin, {repository: null | a string}) is INVALID_INPUT naming the field (YAML `repository:` with nothing is null)', async () => {
    const registry = DriverRegistry.compose(pluginModule({ objectStores: [{ name: 'mem', description: 'test store', create: async () => new MemoryObjectStore('mem') }] }));
    for (const repository of [null, 'env:X', ['init']]) {
      await expect(registry.createBackupService('mem', { repository })).rejects.toMatchObject({ name: 'CairnError', code: 'INVALID_INPUT', details: { field: 'repository' } });
    }
  });

  it('createBackupService(an object-store plugin) builds the chunked repository over that store', async () => {
    const registry = DriverRegistry.compose(pluginModule({ objectStores: [{ name: 'mem', description: 'test store', create: async () => new MemoryObjectStore('mem') }] }));
    process.env.CAIRN_TEST_PASSPHRASE = 'pw';
    const service = await registry.createBackupService('mem', { repository: { init: { kdf: { N: 1024, r: 8, p: 1 } }, passphrase: 'env:CAIRN_TEST_PASSPHRASE', workers: 0 } });
    expect(service).toBeInstanceOf(ChunkedBackupService);
    expect(service.describe()).toMatchObject({ name: 'mem', capabilities: { dedup: true, dependentChains: false } });
    expect((service as ChunkedBackupService).repository.encrypted).toBe(true);
    const named = await registry.createBackupService('mem', { repository: { init: true, workers: 0, name: 'offsite' } });
    expect(named.name).toBe('offsite');
  });

  it("createBackupService(an object-store plugin, {repository: {onWarning}}) tells onWarning, not the process, of locks a backup could not release", async () => {
    const store = new MemoryObjectStore('mem');
    const del = store.delete.bind(store);
    store.delete = async (key) => {
      if (key.startsWith('locks/') && !key.startsWith('locks/record-')) throw new CairnError('UNAVAILABLE', 'the store refuses this delete', { driver: 'mem' });
      return del(key);
    };
    const registry = DriverRegistry.compose(pluginModule({ objectStores: [{ name: 'mem', description: 'test store', create: async () => store }] }));
    const warnings: CairnError[] = [];
    const processWarnings: unknown[] = [];
    const onProcessWarning = (w: unknown) => processWarnings.push(w);
    process.on('warning', onProcessWarning);
    try {
      const service = (await registry.createBackupService('mem', { repository: { init: { kdf: FAST_KDF }, workers: 0, onWarning: (w: CairnError) => warnings.push(w) } })) as ChunkedBackupService;
      const volumes = new MemoryVolumeDriver();
      const manager = new BackupManager({ volumes, targets: { mem: service }, catalog: new RepositoryCatalog(service.repository) });
      const v = await filledVolume(volumes, 1 * MiB, 7);
      expect((await manager.backup({ volumeId: v.id })).status).toBe('available');
      await new Promise((r) => setImmediate(r)); // process.emitWarning emits on the next tick
      expect(warnings).toMatchObject([{ code: 'UNAVAILABLE', details: { locks: expect.any(Array) } }]);
      expect(processWarnings).toEqual([]);
      await service.close();
    } finally {
      process.off('warning', onProcessWarning);
    }
  });
});
