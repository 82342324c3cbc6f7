/**
 * A secret given as `env:NAME` never reaches a child process spawned after it was read: the
 * registry takes the variable out of this process's environment and keeps its value itself.
 * Children inherit the environment (qemu-img through runBounded, qemu-storage-daemon, flock…),
 * where the secret would be readable in /proc/<pid>/environ for as long as they run.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { DriverRegistry, runBounded } from '../src/index.js';
import { expectCode } from './helpers.js';

const NAME = 'CAIRN_TEST_CHILD_ENV_SECRET';

/** What a real child process, spawned as the drivers spawn theirs, sees of NAME. */
async function childSees(): Promise<string> {
  const r = await runBounded('sh', ['-c', `printf '%s' "\${${NAME}-unset}"`], { bound: { kind: 'deadline', ms: 20_000 }, what: 'sh', driver: 'test' });
  expect(r.status).toBe(0);
  return r.stdout;
}

describe('DriverRegistry.secret(env:NAME) and child processes', () => {
  afterEach(() => {
    delete process.env[NAME];
  });

  it('a child spawned after the read does not inherit the variable; the registry still reads the value', async () => {
    process.env[NAME] = 'pass-7c1e0b';
    expect(await childSees()).toBe('pass-7c1e0b'); // the probe works: a set variable is seen
    const registry = DriverRegistry.compose();
    expect(await registry.secret(`env:${NAME}`)).toBe('pass-7c1e0b');
    expect(await childSees()).toBe('unset');
    expect(await runBounded('sh', ['-c', 'env'], { bound: { kind: 'deadline', ms: 20_000 }, what: 'env', driver: 'test', env: { ...process.env, LC_ALL: 'C' } }).then((r) => r.stdout)).not.toContain('pass-7c1e0b');
    expect(await registry.secret(`env:${NAME}`)).toBe('pass-7c1e0b'); // a second target with the same reference
  });

  it('a variable set again is read anew (and taken again), by the registry that took it and by another', async () => {
    const registry = DriverRegistry.compose();
    process.env[NAME] = 'first';
    expect(await registry.secret(`env:${NAME}`)).toBe('first');
    process.env[NAME] = 'second';
    expect(await registry.secret(`env:${NAME}`)).toBe('second');
    expect(await childSees()).toBe('unset');
    expect(await registry.secret(`env:${NAME}`)).toBe('second');
    process.env[NAME] = 'third';
    expect(await DriverRegistry.compose().secret(`env:${NAME}`)).toBe('third');
    expect(await childSees()).toBe('unset');
    await expectCode(DriverRegistry.compose().secret(`env:CAIRN_TEST_NEVER_SET_${process.pid}`), 'NOT_FOUND');
  });

  // The value taken is the reading registry's, not the process's: a registry composed afterwards
  // (the next test, a server's next configuration) must not get a passphrase its caller has since
  // unset, e.g. to init a new repository encrypted under it where an unset variable is NOT_FOUND.
  it('a registry composed after another took the variable, with the variable unset since, gets NOT_FOUND saying it was taken, not the old value', async () => {
    process.env[NAME] = 'stale-4d2a91';
    expect(await DriverRegistry.compose().secret(`env:${NAME}`)).toBe('stale-4d2a91');
    delete process.env[NAME]; // the caller unsets it (already gone: the read took it)
    const later = DriverRegistry.compose();
    const err = await later.secret(`env:${NAME}`).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'CairnError', code: 'NOT_FOUND', driver: 'registry', message: expect.stringContaining('took it out of the environment') });
    expect((err as Error).message).not.toContain('stale-4d2a91');
    expect(await childSees()).toBe('unset');
  });
});
