import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
// @ts-expect-error: a plain ES module of the repository's scripts, without types
import { bundleProgram } from '../../../scripts/bundle.mjs';

/** scripts/bundle.mjs: what bin/cairn.js runs is replaced whole, and only when it changes. */
describe('bundleProgram', () => {
  let dir: string;
  beforeEach(async () => {
    // Inside the package, so that the entries resolve its dependencies (@cairn/core) as the program does.
    dir = await mkdtemp(join(dirname(fileURLToPath(import.meta.url)), '..', '.test-bundle-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('leaves unchanged files alone, replaces a changed one by a rename, and leaves no temporary file', async () => {
    const entry = join(dir, 'entry.js');
    const out = join(dir, 'out');
    await writeFile(entry, "console.log('one');\n");
    await bundleProgram({ entry, outdir: out, name: 'prog' });
    expect((await readdir(out)).sort()).toEqual(['chunk-worker.js', 'prog.js', 'prog.stamp.json']);
    const first = await stat(join(out, 'prog.js'));
    const worker = await stat(join(out, 'chunk-worker.js'));

    await bundleProgram({ entry, outdir: out, name: 'prog' });
    const again = await stat(join(out, 'prog.js'));
    expect([again.ino, again.mtimeMs]).toEqual([first.ino, first.mtimeMs]);

    await writeFile(entry, "console.log('two');\n");
    await bundleProgram({ entry, outdir: out, name: 'prog' });
    const changed = await stat(join(out, 'prog.js'));
    expect(changed.ino).not.toBe(first.ino); // a new file renamed over the old one, never rewritten in place
    expect(await readFile(join(out, 'prog.js'), 'utf8')).toContain('console.log("two")');
    const workerAfter = await stat(join(out, 'chunk-worker.js'));
    expect([workerAfter.ino, workerAfter.mtimeMs]).toEqual([worker.ino, worker.mtimeMs]);
    expect((await readdir(out)).sort()).toEqual(['chunk-worker.js', 'prog.js', 'prog.stamp.json']);
  });

  it("stamps the build-info files of the packages bundled, which bin/cairn.js compares", async () => {
    const out = join(dir, 'out');
    const entry = join(dir, 'entry.js');
    await writeFile(entry, "import { CairnError } from '@cairn/core';\nconsole.log(CairnError.name);\n");
    await bundleProgram({ entry, outdir: out, name: 'prog' });
    const { builds } = JSON.parse(await readFile(join(out, 'prog.stamp.json'), 'utf8')) as { builds: { file: string; mtimeMs: number }[] };
    const coreInfo = join(dirname(fileURLToPath(import.meta.url)), '../../core/dist/.tsbuildinfo');
    const core = builds.find((b) => join(out, b.file) === coreInfo);
    expect(core).toEqual({ file: expect.any(String), mtimeMs: (await stat(coreInfo)).mtimeMs });
  });
});
