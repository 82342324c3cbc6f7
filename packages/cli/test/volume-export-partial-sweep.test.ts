import { mkdir, readdir, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, cairnUnderway, MiB, removeDir, tempDir, writeRawImage, type RunUnderway } from './helpers.js';

/**
 * `volume export` writes its image in a private `.cairn-partial-XXXXXX` directory beside the file
 * (createPartialFile). One killed outright (SIGKILL: no cleanup runs) leaves that directory; the
 * next export to the directory removes it, its writer being certainly dead, and never removes the
 * partial image of an export that still runs.
 */
describe('volume export: partial images of killed exports', () => {
  let cwd: string;
  let data: Buffer;

  /** Starts an export of volume `disk` to `file` and resolves once it writes the image in `dir` (`file` itself appears only when complete). */
  function exportUnderway(file: string, dir: string): Promise<RunUnderway> {
    // The image being written: a file beside `file`, or `file`'s name in a directory beside it
    // (not the directory alone: its owner file may not be in place yet).
    const writing = async () => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        if (e.isFile()) return true;
        if (e.isDirectory() && (await readdir(join(dir, e.name)).catch((): string[] => [])).includes(basename(file))) return true;
      }
      return false;
    };
    return cairnUnderway(['volume', 'export', 'disk', file, '--json'], { cwd }, writing, { tries: 3000, everyMs: 5 });
  }

  beforeAll(async () => {
    cwd = await tempDir();
    data = await writeRawImage(join(cwd, 'disk.raw'), 512 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'disk.raw'), '--name', 'disk'], { cwd });
  }, 300_000);
  afterAll(() => removeDir(cwd));

  it('the next export to the directory removes the partial image of a SIGKILLed export', async () => {
    const out = join(cwd, 'killed');
    await mkdir(out);
    const first = await exportUnderway(join(out, 'b.raw'), out);
    first.kill();
    expect((await first.exit).code).not.toBe(0);
    const left = await readdir(out);
    expect(left.length, 'the killed export left its partial image').toBeGreaterThan(0);
    expect(left).not.toContain('b.raw');
    await cairnJson(['volume', 'export', 'disk', join(out, 'c.raw')], { cwd });
    expect(await readdir(out)).toEqual(['c.raw']);
    expect((await readFile(join(out, 'c.raw'))).equals(data)).toBe(true);
  }, 120_000);

  it('a file name of 250 bytes (under NAME_MAX, 255) is written: the partial image keeps the name, in its own directory', async () => {
    const out = join(cwd, 'long');
    await mkdir(out);
    const name = `${'n'.repeat(246)}.raw`;
    expect(await cairnJson(['volume', 'export', 'disk', join(out, name)], { cwd })).toMatchObject({ file: join(out, name), format: 'raw' });
    expect(await readdir(out)).toEqual([name]);
    expect((await readFile(join(out, name))).equals(data)).toBe(true);
  }, 60_000);

  it("an export to the directory leaves a running export's partial image alone: both complete", async () => {
    const out = join(cwd, 'live');
    await mkdir(out);
    const running = await exportUnderway(join(out, 'b.raw'), out);
    await cairnJson(['volume', 'export', 'disk', join(out, 'c.raw')], { cwd });
    const r = await running.exit;
    expect(r.code, r.stderr).toBe(0);
    expect((await readdir(out)).sort()).toEqual(['b.raw', 'c.raw']);
    expect((await readFile(join(out, 'b.raw'))).equals(data)).toBe(true);
  }, 120_000);
});
