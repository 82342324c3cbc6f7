import { afterEach, describe, expect, it } from 'vitest';
import { CairnError, ChunkedBackupService, DriverRegistry, MemoryObjectStore, pluginModule } from '../src/index.js';
import { FAST_KDF } from './helpers.js';

/** The memory store with the close() a networked store has: it counts the calls (and can be told to fail them). */
class CountingStore extends MemoryObjectStore {
  closes = 0;
  closeFails = false;

  async close(): Promise<void> {
    this.closes++;
    if (this.closeFails) throw new CairnError('UNAVAILABLE', 'the connection pool cannot be shut down', { driver: this.name });
  }
}

/** A registry whose object-store plugin `mem` hands out `store` (one store, so a repository made through it is there for the next build). */
function registryOver(store: CountingStore): DriverRegistry {
  return DriverRegistry.compose(pluginModule({ objectStores: [{ name: 'mem', description: 'counting store', create: async () => store }] }));
}

const PASSPHRASE_VAR = 'CAIRN_TEST_STORE_CLOSE_PASSPHRASE';

afterEach(() => {
  delete process.env[PASSPHRASE_VAR];
});

/**
 * Who builds a store closes it (DriverRegistry.createBackupService, ChunkedServiceOptions.ownsStore):
 * the chunked service the registry built owns its store and closes it once, at its close; every
 * failure once the store is built closes it before the error is raised; a store a caller passes
 * to ChunkedBackupService.open stays the caller's.
 */
describe('DriverRegistry.createBackupService: the object store it builds is closed', () => {
  it("the service's close() closes the store it was built over exactly once, however often it is called; a caller's own store stays open", async () => {
    const store = new CountingStore('mem');
    const service = await registryOver(store).createBackupService('mem', { repository: { init: { kdf: FAST_KDF }, workers: 1 } });
    expect(service).toBeInstanceOf(ChunkedBackupService);
    (service as ChunkedBackupService).repository.processor(); // a worker thread to stop as well
    expect(store.closes).toBe(0);
    await Promise.all([service.close!(), service.close!()]);
    await service.close!();
    expect(store.closes).toBe(1);

    const own = new CountingStore('own');
    const opened = await ChunkedBackupService.open(own, { init: { kdf: FAST_KDF }, workers: 0 });
    await opened.close();
    expect(own.closes).toBe(0);
  });

  it('a wrong passphrase (INVALID_INPUT) closes the store before the error is raised', async () => {
    const store = new CountingStore('mem');
    await (await ChunkedBackupService.open(store, { init: { kdf: FAST_KDF }, passphrase: 'right', workers: 0 })).close();
    process.env[PASSPHRASE_VAR] = 'wrong';
    await expect(registryOver(store).createBackupService('mem', { repository: { passphrase: `env:${PASSPHRASE_VAR}`, workers: 0 } })).rejects.toMatchObject({ name: 'CairnError', code: 'INVALID_INPUT' });
    expect(store.closes).toBe(1);
  });

  it('a passphrase that cannot be read (an unset variable: NOT_FOUND) is read before the store is built: none is built', async () => {
    const store = new CountingStore('mem');
    let built = 0;
    const registry = DriverRegistry.compose(pluginModule({ objectStores: [{ name: 'mem', description: 'counting store', create: async () => (built++, store) }] }));
    await expect(registry.createBackupService('mem', { repository: { init: true, passphrase: `env:${PASSPHRASE_VAR}`, workers: 0 } })).rejects.toMatchObject({ code: 'NOT_FOUND', driver: 'registry' });
    expect(built).toBe(0);
    expect(store.closes).toBe(0);
    expect(await store.head('config').catch((err: CairnError) => err.code)).toBe('NOT_FOUND'); // nothing was made
  });

  it('a store with no repository, opened without init (NOT_FOUND), is closed; a close that fails then does not replace the error', async () => {
    const store = new CountingStore('mem');
    await expect(registryOver(store).createBackupService('mem', { repository: { workers: 0 } })).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('run init first') });
    expect(store.closes).toBe(1);
    store.closeFails = true;
    await expect(registryOver(store).createBackupService('mem', { repository: { workers: 0 } })).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('run init first') });
    expect(store.closes).toBe(2);
  });
});
