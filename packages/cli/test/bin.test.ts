import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BIN } from './helpers.js';

/** Runs a copy of bin/cairn.js laid out in `root` (root/bin/cairn.js). */
function runCopy(root: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(root, 'bin', 'cairn.js'), '--version'], (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('bin/cairn.js', () => {
  let root: string;
  beforeEach(async () => {
    // A name that a file URL would percent-encode: the message gives the path as it is.
    root = await mkdtemp(join(tmpdir(), 'cairn bin é-'));
    await mkdir(join(root, 'bin'));
    await copyFile(BIN, join(root, 'bin', 'cairn.js'));
    await writeFile(join(root, 'package.json'), JSON.stringify({ type: 'module' }));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('runs the bundle beside it (bundle/cairn.js), not the package dist', async () => {
    await mkdir(join(root, 'bundle'));
    await writeFile(join(root, 'bundle', 'cairn.js'), "process.stdout.write('ran the bundle ' + process.argv.slice(2).join(' '));\n");
    const r = await runCopy(root);
    expect(r).toMatchObject({ code: 0, stdout: 'ran the bundle --version' });
  });

  it('warns on stderr, and still runs, when a build the bundle was made from is newer (its stamp)', async () => {
    await mkdir(join(root, 'bundle'));
    await writeFile(join(root, 'bundle', 'cairn.js'), "process.stdout.write('ran');\n");
    await writeFile(join(root, 'build.info'), '');
    const { mtimeMs } = await stat(join(root, 'build.info'));
    const stampWith = (m: number) => writeFile(join(root, 'bundle', 'cairn.stamp.json'), JSON.stringify({ builds: [{ file: '../build.info', mtimeMs: m }, { file: '../not-shipped.info', mtimeMs: 1 }] }));
    await stampWith(mtimeMs);
    expect(await runCopy(root)).toEqual({ code: 0, stdout: 'ran', stderr: '' });
    await stampWith(mtimeMs - 1000);
    const stale = await runCopy(root);
    expect(stale).toMatchObject({ code: 0, stdout: 'ran' });
    expect(stale.stderr).toBe(`warning: the cairn bundle is older than the build of ${join(root, 'build.info')}: run \`npm run build\`\n`);
  });

  it('without a bundle, exits 1 with INTERNAL and says how to build it', async () => {
    const r = await runCopy(root);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('error [INTERNAL]: the cairn program is not built');
    expect(r.stderr).toContain(join(root, 'bundle', 'cairn.js'));
    expect(r.stderr).toContain('npm run build');
  });
});
