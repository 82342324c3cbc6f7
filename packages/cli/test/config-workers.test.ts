import { describe, expect, it } from 'vitest';
import { ConfigSchema, MAX_WORKERS } from '../src/config/schema.js';
import { repositoryWorkers } from '../src/config/workers.js';

/**
 * The config holds `repository.workers` to at most MAX_WORKERS; the default, one thread per core,
 * must hold to it too, whatever the machine (the core count is injected: no 1024-core machine
 * needed).
 */
describe('repository worker threads', () => {
  it('default on a machine with more cores than the config allows: MAX_WORKERS, which the config itself accepts', () => {
    for (const cores of [MAX_WORKERS + 1, 1024, 4096]) expect(repositoryWorkers(undefined, cores)).toBe(MAX_WORKERS);
    const config = { volumeDrivers: { file: { plugin: 'file' } }, targets: { posix: { plugin: 'posix', options: { repository: { workers: repositoryWorkers(undefined, 1024) } } } } };
    expect(ConfigSchema.safeParse(config).success).toBe(true);
  });

  it('default on a smaller machine: one per core, at least one', () => {
    expect(repositoryWorkers(undefined, 2)).toBe(2);
    expect(repositoryWorkers(undefined, MAX_WORKERS)).toBe(MAX_WORKERS);
    expect(repositoryWorkers(undefined, 0)).toBe(1);
  });

  it('a configured count is kept as given, 0 (inline) included', () => {
    for (const n of [0, 1, 7, MAX_WORKERS]) expect(repositoryWorkers(n, 1024)).toBe(n);
  });
});
