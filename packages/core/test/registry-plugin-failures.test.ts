import { ContainerModule } from 'inversify';
import { describe, expect, it } from 'vitest';
import { CairnError, DriverRegistry, MemoryObjectStore, MemoryVolumeDriver, memoryModule, pluginModule, type DriverFactory, type VolumeDriver } from '../src/index.js';

/** What `work` threw or rejected with. */
async function failure(work: () => unknown): Promise<unknown> {
  try {
    await work();
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

/** A registry with one volume driver factory `name` whose create is `create`. */
function withVolumeFactory(name: string, create: DriverFactory<VolumeDriver>['create']): DriverRegistry {
  return DriverRegistry.compose(memoryModule, pluginModule({ volumeDrivers: [{ name, description: 'under test', create }] }));
}

/**
 * docs/architecture.md, "Composition" and "CairnError": the registry composes plugins and builds
 * drivers by name; what a plugin does wrong comes out as a CairnError with a stable code that
 * names the plugin (never INTERNAL, never a bare TypeError), and no secret the registry read is
 * echoed in it.
 */
describe('DriverRegistry: plugins that misbehave', () => {
  it('a factory that rejects with a plain Error is a CairnError naming the plugin (UNAVAILABLE), the cause kept', async () => {
    const registry = withVolumeFactory('flaky', async () => {
      throw new Error('connection refused by the array');
    });
    const err = await failure(() => registry.createVolumeDriver('flaky'));
    expect(err).toBeInstanceOf(CairnError);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', driver: 'flaky', details: { plugin: 'flaky', kind: 'volume driver' } });
    expect((err as Error).message).toContain('flaky');
    expect((err as Error).message).toContain('connection refused by the array');
    expect((err as Error).cause).toBeInstanceOf(Error);
  });

  it('a factory that throws synchronously (a TypeError) is a CairnError too, not INTERNAL', async () => {
    const registry = withVolumeFactory('buggy', () => {
      throw new TypeError("Cannot read properties of undefined (reading 'x')");
    });
    const err = await failure(() => registry.createVolumeDriver('buggy'));
    expect(err).toMatchObject({ name: 'CairnError', code: 'UNAVAILABLE', driver: 'buggy' });
  });

  it('a factory that rejects with a system error keeps its code (ENOENT: NOT_FOUND), naming the plugin', async () => {
    const registry = withVolumeFactory('disk', async () => {
      throw Object.assign(new Error('ENOENT: no such file or directory'), { code: 'ENOENT' });
    });
    expect(await failure(() => registry.createVolumeDriver('disk'))).toMatchObject({ name: 'CairnError', code: 'NOT_FOUND', driver: 'disk' });
  });

  it("a factory's untagged CairnError keeps its code and is tagged with the plugin; a tagged one passes unchanged", async () => {
    const untagged = withVolumeFactory('quiet', async () => {
      throw new CairnError('INVALID_INPUT', 'option pool is required');
    });
    const err = await failure(() => untagged.createVolumeDriver('quiet'));
    expect(err).toMatchObject({ code: 'INVALID_INPUT', driver: 'quiet' });
    expect((err as Error).message).toContain('quiet');
    const original = new CairnError('INVALID_INPUT', 'option pool is required', { driver: 'loud' });
    const tagged = withVolumeFactory('loud', async () => {
      throw original;
    });
    expect(await failure(() => tagged.createVolumeDriver('loud'))).toBe(original);
  });

  it('an object store factory that rejects, under a chunked repository, names the plugin', async () => {
    const registry = DriverRegistry.compose(
      pluginModule({
        objectStores: [
          {
            name: 's3ish',
            description: 'under test',
            create: async () => {
              throw new Error('bucket unreachable');
            },
          },
        ],
      }),
    );
    expect(await failure(() => registry.createBackupService('s3ish', { repository: { init: true } }))).toMatchObject({ code: 'UNAVAILABLE', driver: 's3ish' });
  });

  it('a factory that resolves with nothing is INVALID_INPUT naming the plugin, not a crash later', async () => {
    const registry = withVolumeFactory('hollow', async () => undefined as unknown as VolumeDriver);
    const err = await failure(() => registry.createVolumeDriver('hollow'));
    expect(err).toMatchObject({ name: 'CairnError', code: 'INVALID_INPUT', details: { plugin: 'hollow' } });
    expect((err as Error).message).toContain('hollow');
  });

  it('a factory of the wrong shape (no create, no name, null) is INVALID_INPUT at compose, naming it', () => {
    const noCreate = pluginModule({ volumeDrivers: [{ name: 'shapeless', description: 'x' } as unknown as DriverFactory<VolumeDriver>] });
    const e1 = (() => {
      try {
        DriverRegistry.compose(noCreate);
      } catch (err) {
        return err;
      }
    })();
    expect(e1).toMatchObject({ name: 'CairnError', code: 'INVALID_INPUT', details: { plugin: 'shapeless' } });
    expect((e1 as Error).message).toContain('shapeless');
    const noName = pluginModule({ objectStores: [{ description: 'x', create: async () => new MemoryObjectStore('m') } as unknown as DriverFactory<MemoryObjectStore>] });
    expect(() => DriverRegistry.compose(noName)).toThrow(expect.objectContaining({ name: 'CairnError', code: 'INVALID_INPUT', details: { kind: 'object store', index: 1 } }));
    const nothing = pluginModule({ volumeDrivers: [null as unknown as DriverFactory<VolumeDriver>] });
    expect(() => DriverRegistry.compose(nothing)).toThrow(expect.objectContaining({ name: 'CairnError', code: 'INVALID_INPUT' }));
  });

  it('a module whose load throws, or that is no module, is INVALID_INPUT naming its place', () => {
    const throwing = new ContainerModule(() => {
      throw new Error('plugin failed to initialise');
    });
    expect(() => DriverRegistry.compose(memoryModule, throwing)).toThrow(expect.objectContaining({ name: 'CairnError', code: 'INVALID_INPUT', details: { module: 2 } }));
    expect(() => DriverRegistry.compose({} as ContainerModule)).toThrow(expect.objectContaining({ name: 'CairnError', code: 'INVALID_INPUT', details: { module: 1 } }));
  });

  it('a duplicate name is still CONFLICT naming it; a good plugin beside a bad factory still builds', async () => {
    const twin = pluginModule({ volumeDrivers: [{ name: 'memory', description: 'an impostor', create: async () => new MemoryVolumeDriver() }] });
    expect(() => DriverRegistry.compose(memoryModule, twin)).toThrow(expect.objectContaining({ code: 'CONFLICT', message: expect.stringContaining('"memory"') }));
    const registry = withVolumeFactory('flaky', async () => {
      throw new Error('down');
    });
    expect(await registry.createVolumeDriver('memory')).toBeInstanceOf(MemoryVolumeDriver);
  });

  it('a factory error that repeats a secret the registry read has it replaced, and drops the cause that holds it', async () => {
    process.env.CAIRN_TEST_REGISTRY_TOKEN = 'tok-9f8e7d6c5b4a';
    const registry = DriverRegistry.compose(
      pluginModule({
        volumeDrivers: [
          {
            name: 'leaky',
            description: 'under test',
            create: async (options, context) => {
              const token = await context.secret(String(options.token));
              throw new Error(`login with ${token} refused`);
            },
          },
          {
            name: 'leaky-tagged',
            description: 'under test',
            create: async (options, context) => {
              const token = await context.secret(String(options.token));
              throw new CairnError('UNAVAILABLE', `login with ${token} refused`, { driver: 'leaky-tagged' });
            },
          },
        ],
      }),
    );
    for (const plugin of ['leaky', 'leaky-tagged']) {
      const err = (await failure(() => registry.createVolumeDriver(plugin, { token: 'env:CAIRN_TEST_REGISTRY_TOKEN' }))) as CairnError;
      expect(err).toMatchObject({ name: 'CairnError', code: 'UNAVAILABLE' });
      expect(err.message).toContain(plugin);
      expect(JSON.stringify({ message: err.message, stack: err.stack, details: err.details, cause: String(err.cause) })).not.toContain('tok-9f8e7d6c5b4a');
      expect(err.message).toContain('***');
    }
    delete process.env.CAIRN_TEST_REGISTRY_TOKEN;
  });

  it('a factory error whose cause (or details) repeats a secret the registry read drops that cause, whatever its own message', async () => {
    process.env.CAIRN_TEST_REGISTRY_TOKEN = 'tok-1a2b3c4d5e6f';
    const registry = DriverRegistry.compose(
      pluginModule({
        volumeDrivers: [
          {
            name: 'wrapping',
            description: 'under test',
            create: async (options, context) => {
              const token = await context.secret(String(options.token));
              throw new Error('login refused', { cause: new Error(`server said: bad token ${token}`) });
            },
          },
          {
            name: 'wrapping-tagged',
            description: 'under test',
            create: async (options, context) => {
              const token = await context.secret(String(options.token));
              throw new CairnError('UNAVAILABLE', 'login refused', { driver: 'wrapping-tagged', cause: new CairnError('INVALID_INPUT', 'refused', { details: { sent: token } }) });
            },
          },
          {
            name: 'detailed',
            description: 'under test',
            create: async (options, context) => {
              const token = await context.secret(String(options.token));
              throw new CairnError('UNAVAILABLE', 'login refused', { driver: 'detailed', details: { sent: token } });
            },
          },
        ],
      }),
    );
    for (const plugin of ['wrapping', 'wrapping-tagged', 'detailed']) {
      const err = (await failure(() => registry.createVolumeDriver(plugin, { token: 'env:CAIRN_TEST_REGISTRY_TOKEN' }))) as CairnError;
      expect(err).toMatchObject({ name: 'CairnError', code: 'UNAVAILABLE' });
      expect(err.message).toContain(plugin);
      const shown: string[] = [];
      for (let c: unknown = err; c; c = (c as { cause?: unknown }).cause) shown.push(String((c as Error).message), JSON.stringify((c as CairnError).details ?? null));
      expect(shown.join('\n')).not.toContain('tok-1a2b3c4d5e6f');
    }
    delete process.env.CAIRN_TEST_REGISTRY_TOKEN;
  });
});
