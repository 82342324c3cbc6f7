import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnSpawn, jsonError, removeDir, tempDir } from './helpers.js';

type Spawned = ReturnType<typeof cairnSpawn>;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * `cairn init` without `--force` claims the config's name (an empty file, created exclusively)
 * before it makes the repository: of several inits at once exactly one writes the config and
 * makes its repository; a killed init leaves an empty config that the next init names.
 */
describe('cairn init claims its config', () => {
  let cwd: string;
  const running: Spawned[] = [];
  beforeAll(async () => (cwd = await tempDir()));
  afterEach(() => {
    for (const { child } of running.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  afterAll(() => removeDir(cwd));

  async function newDir(name: string): Promise<string> {
    const dir = join(cwd, name);
    await mkdir(dir);
    return dir;
  }

  it('eight inits at once in one directory: one succeeds, the others are ALREADY_EXISTS (exit 4) and make no repository', async () => {
    for (const round of [1, 2, 3]) {
      const dir = await newDir(`race-${round}`);
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) => cairn(['init', '--yes', '--repository-dir', `repo-${i}`, '--volumes-dir', `volumes-${i}`, '--json'], { cwd: dir })),
      );
      const winners = results.flatMap((r, i) => (r.code === 0 ? [i] : []));
      expect(winners, `round ${round}: ${results.map((r) => r.stderr).join('\n')}`).toHaveLength(1);
      const winner = winners[0]!;
      for (const r of results.filter((_, i) => i !== winner)) {
        expect(r.code, r.stderr).toBe(4);
        expect(jsonError(r).code).toBe('ALREADY_EXISTS');
      }
      const config = JSON.parse(await readFile(join(dir, 'cairn.config.json'), 'utf8'));
      expect(config.targets.posix.options.directory).toBe(`repo-${winner}`);
      expect((await readdir(dir)).filter((name) => name.startsWith('repo-'))).toEqual([`repo-${winner}`]);
      expect(await readdir(join(dir, `repo-${winner}`))).toContain('config');
    }
  }, 180_000);

  /**
   * Starts `init` in `dir` with a FIFO as its passphrase file, fed once: the first read (before
   * the claim) gets the passphrase, the second (after it) blocks, so the init stays after its
   * claim (the empty config) until it is signalled. Resolves once the claim has been there for a
   * while (the init watches for signals from just after making it). (A FIFO as the repository's
   * `config` no longer holds it: the posix store takes a FIFO for no object, at once.)
   */
  async function initHoldingClaim(dir: string): Promise<Spawned> {
    const fifo = join(dir, 'pass.fifo');
    await promisify(execFile)('mkfifo', [fifo]);
    const spawned = cairnSpawn(['init', '--yes', '--repository-dir', 'stuck-repository', '--passphrase-file', fifo, '--json'], { cwd: dir });
    running.push(spawned);
    await promisify(execFile)('sh', ['-c', `printf 'a long enough passphrase' > '${fifo}'`]); // the read before the claim
    const config = join(dir, 'cairn.config.json');
    for (const deadline = Date.now() + 20_000; !(await stat(config).catch(() => undefined)); await sleep(10)) {
      if (spawned.child.exitCode !== null) throw new Error(`init ended before it claimed its config: ${(await spawned.exit).stderr}`);
      if (Date.now() > deadline) throw new Error('init made no config to claim within 20 s');
    }
    await sleep(500);
    expect((await stat(config)).size).toBe(0);
    expect(spawned.child.exitCode).toBe(null);
    return spawned;
  }

  it('SIGINT or SIGTERM to an init that holds its claim removes the empty config and ends the init by that signal', async () => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const dir = await newDir(`interrupted-${signal}`);
      const init = await initHoldingClaim(dir);
      init.child.kill(signal);
      await init.exit;
      expect(init.child.signalCode).toBe(signal);
      expect(await readdir(dir)).not.toContain('cairn.config.json');
      expect((await cairn(['init', '--yes', '--repository-dir', 'repository', '--json'], { cwd: dir })).code).toBe(0);
    }
  });

  /**
   * A FIFO passphrase file holds the plain init between its claim and its second read of the
   * passphrase (the first, assertPassphrase's, comes before the claim), while `--force` writes
   * the config.
   */
  it('init --force while a plain init holds its claim: the forced config stays, the plain init is ALREADY_EXISTS (exit 4) naming its repository', async () => {
    const dir = await newDir('forced-meanwhile');
    const fifo = join(dir, 'pass.fifo');
    await promisify(execFile)('mkfifo', [fifo]);
    const feed = () => promisify(execFile)('sh', ['-c', `printf 'a long enough passphrase' > '${fifo}'`]);
    const plain = cairnSpawn(['init', '--yes', '--repository-dir', 'plain-repo', '--passphrase-file', fifo, '--json'], { cwd: dir });
    running.push(plain);
    await feed(); // assertPassphrase's read, before the claim
    const config = join(dir, 'cairn.config.json');
    for (const deadline = Date.now() + 20_000; !(await stat(config).catch(() => undefined)); await sleep(10)) {
      if (plain.child.exitCode !== null) throw new Error(`init ended before it claimed its config: ${(await plain.exit).stderr}`);
      if (Date.now() > deadline) throw new Error('init made no config to claim within 20 s');
    }
    await sleep(500);
    expect((await stat(config)).size).toBe(0);
    const forced = await cairn(['init', '--yes', '--force', '--repository-dir', 'forced', '--json'], { cwd: dir });
    expect(forced.code, forced.stderr).toBe(0);
    await feed(); // the plain init goes on
    const r = await plain.exit;
    expect(r.code, r.stderr).toBe(4);
    expect(jsonError(r)).toMatchObject({ code: 'ALREADY_EXISTS', details: { file: config, repository: join(dir, 'plain-repo') } });
    expect(JSON.parse(await readFile(config, 'utf8')).targets.posix.options.directory).toBe('forced');
    expect(await readdir(join(dir, 'plain-repo'))).toContain('config');
    expect((await readdir(dir)).sort()).toEqual(['cairn.config.json', 'forced', 'pass.fifo', 'plain-repo']);
  });

  it('an init killed while it holds its claim leaves the config empty: init is ALREADY_EXISTS (exit 4) until --force', async () => {
    const dir = await newDir('killed');
    const init = await initHoldingClaim(dir);
    init.child.kill('SIGKILL');
    await init.exit;
    expect((await stat(join(dir, 'cairn.config.json'))).size).toBe(0);
    const again = await cairn(['init', '--yes', '--repository-dir', 'repository', '--json'], { cwd: dir });
    expect(again.code, again.stderr).toBe(4);
    expect(jsonError(again)).toMatchObject({ code: 'ALREADY_EXISTS', details: { file: join(dir, 'cairn.config.json') } });
    expect(await readdir(dir)).not.toContain('repository');
    const forced = await cairn(['init', '--yes', '--force', '--repository-dir', 'repository', '--json'], { cwd: dir });
    expect(forced.code, forced.stderr).toBe(0);
    expect(JSON.parse(await readFile(join(dir, 'cairn.config.json'), 'utf8')).targets.posix.options.directory).toBe('repository');
  });
});
