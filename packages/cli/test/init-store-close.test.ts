import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { run } from '../src/program.js';
import { removeDir, tempDir } from './helpers.js';

/** Runs `cairn args` in this process (so that its stores can be counted); stdout and stderr are captured, not printed. */
async function cairnHere(args: string[]): Promise<{ code: number; stderr: string }> {
  const stderr: string[] = [];
  const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => (stderr.push(String(chunk)), true));
  const exitCode = process.exitCode;
  try {
    process.exitCode = undefined;
    return { code: await run(['node', 'cairn', ...args]), stderr: stderr.join('') };
  } finally {
    out.mockRestore();
    err.mockRestore();
    process.exitCode = exitCode;
  }
}

/**
 * `cairn init` opens the posix store to ask whether a repository is there, then the backup service
 * opens its own: every store it opens is closed again, when it succeeds and when it fails. The
 * stores are the real posix stores; their `open` and `close` are only counted (they still run).
 */
describe('cairn init closes every store it opens', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));
  afterEach(() => vi.restoreAllMocks());

  /** Counts the posix stores opened and closed from now on. */
  function countStores(): { opened: () => number; closed: () => number } {
    const open = vi.spyOn(PosixObjectStore, 'open');
    const close = vi.spyOn(PosixObjectStore.prototype, 'close');
    return { opened: () => open.mock.calls.length, closed: () => close.mock.calls.length };
  }

  it('a new repository, then one adopted with --force: as many closes as opens', async () => {
    const config = join(cwd, 'plain', 'cairn.config.json');
    await mkdir(join(cwd, 'plain'));
    for (const args of [[], ['--force']]) {
      const stores = countStores();
      const r = await cairnHere(['init', '--yes', '--json', '--config', config, ...args]);
      expect(r.code, r.stderr).toBe(0);
      expect(stores.opened(), args.join(' ')).toBe(2); // the look for a repository, then the service's own
      expect(stores.closed(), args.join(' ')).toBe(stores.opened());
      vi.restoreAllMocks();
    }
  });

  it('an init that fails once it has looked (an encrypted repository adopted without its passphrase): as many closes as opens', async () => {
    const dir = join(cwd, 'encrypted');
    await mkdir(dir);
    const config = join(dir, 'cairn.config.json');
    process.env.CAIRN_T4_PASSPHRASE = 'a passphrase of this test';
    try {
      const made = await cairnHere(['init', '--yes', '--json', '--config', config, '--passphrase-env', 'CAIRN_T4_PASSPHRASE']);
      expect(made.code, made.stderr).toBe(0);
    } finally {
      delete process.env.CAIRN_T4_PASSPHRASE;
    }
    const stores = countStores();
    const r = await cairnHere(['init', '--yes', '--json', '--force', '--config', config]);
    expect(r.code).not.toBe(0);
    expect(stores.opened()).toBe(2);
    expect(stores.closed()).toBe(stores.opened());
  });
});
