import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, removeDir, tempDir } from './helpers.js';

/** The built config claim, run in a child process that this test kills. */
const CONFIG_CLAIM = join(dirname(fileURLToPath(import.meta.url)), '../dist/io/config-claim.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * An init killed outright (SIGKILL) while it publishes its config leaves its temporary file in a
 * private `.cairn-partial-XXXXXX` directory naming it (createPartialFile), never as a loose file
 * beside the config: the next init there (here with `--force`) removes that directory, its owner
 * being dead, and leaves nothing but the config and the repository.
 */
describe('a config publish killed with SIGKILL', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  it('leaves a private directory that the next init removes: nothing but the config stays', async () => {
    const dir = join(cwd, 'killed');
    await mkdir(dir);
    const file = join(dir, 'cairn.config.json');
    // A large text, so that the write (and fsync) lasts long enough to be caught under way.
    const script = `import { claimConfigFile } from ${JSON.stringify(CONFIG_CLAIM)};
      const claim = await claimConfigFile(${JSON.stringify(file)});
      await claim.publish('x'.repeat(256 * 1024 * 1024));`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_code, signal) => r(signal)));
    /** The temporary config being written: a loose file beside the config, or the config's name inside a directory. */
    const writing = async (): Promise<string | undefined> => {
      for (const name of await readdir(dir)) {
        if (name === 'cairn.config.json') continue;
        const st = await stat(join(dir, name)).catch(() => undefined);
        if (st?.isFile() && st.size > 0) return name;
        if (st?.isDirectory() && (await readdir(join(dir, name)).catch((): string[] => [])).includes('cairn.config.json')) return name;
      }
      return undefined;
    };
    let caught: string | undefined;
    for (let i = 0; i < 4000 && !caught && child.exitCode === null; i++) {
      caught = await writing();
      if (!caught) await sleep(2);
    }
    expect(caught, `the publish was never caught under way: ${stderr}`).toBeDefined();
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    // Left: the empty claim and the write under way, in a directory naming the killed process.
    expect((await stat(file)).size).toBe(0);
    expect(caught).toMatch(/^\.cairn-partial-[A-Za-z0-9]{6}$/);
    expect(JSON.parse(await readFile(join(dir, caught!, 'cairn-staging.json'), 'utf8')).owner.pid).toBe(child.pid);

    const r = await cairnJson(['init', '--yes', '--force'], { cwd: dir });
    expect(r).toMatchObject({ config: file, repositoryCreated: true });
    expect((await readdir(dir)).sort()).toEqual(['.cairn', 'cairn.config.json']);
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ version: 1, defaultTarget: 'posix' });
  }, 120_000);
});
