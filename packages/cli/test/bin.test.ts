import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
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
    root = await mkdtemp(join(tmpdir(), 'cairn-bin-'));
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

  it('without a bundle, exits 1 with INTERNAL and says how to build it', async () => {
    const r = await runCopy(root);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('error [INTERNAL]: the cairn program is not built');
    expect(r.stderr).toContain(join(root, 'bundle', 'cairn.js'));
    expect(r.stderr).toContain('npm run build');
  });
});
