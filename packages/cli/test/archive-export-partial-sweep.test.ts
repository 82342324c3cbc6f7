import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, cairnUnderway, MiB, removeDir, tempDir, writeRawImage, type RunUnderway } from './helpers.js';

/**
 * An archive export killed outright (SIGKILL: no cleanup runs) leaves its partial archive beside
 * the target. The next export to that directory removes it, since its writer is certainly dead;
 * it never removes the partial archive of an export that still runs.
 */
describe('backup export --archive: partial archives of killed exports', () => {
  let cwd: string;
  let tmp: string;
  let backupId: string;
  const env = () => ({ TMPDIR: tmp });

  /** Starts an export to `file` and resolves once it runs and its partial archive is in `dir`. */
  function exportUnderway(file: string, dir: string): Promise<RunUnderway> {
    const args = ['backup', 'export', backupId, '--archive', file, '--json'];
    return cairnUnderway(args, { cwd, env: env() }, async (err) => err.includes('export: restore') && (await readdir(dir)).length > 0, { tries: 1500, everyMs: 20 });
  }

  beforeAll(async () => {
    cwd = await tempDir();
    tmp = join(cwd, 'tmp');
    await mkdir(tmp);
    await writeRawImage(join(cwd, 'disk.raw'), 256 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'disk.raw'), '--name', 'disk'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'disk'], { cwd })).id;
  }, 300_000);
  afterAll(() => removeDir(cwd));

  it('the next export to the directory removes the partial archive of a SIGKILLed export', async () => {
    const out = join(cwd, 'killed');
    await mkdir(out);
    const first = await exportUnderway(join(out, 'b.tar'), out);
    first.kill();
    expect((await first.exit).code).not.toBe(0);
    const left = await readdir(out);
    expect(left.length, 'the killed export left its partial archive').toBeGreaterThan(0);
    expect(left).not.toContain('b.tar');
    await cairnJson(['backup', 'export', backupId, '--archive', join(out, 'c.tar')], { cwd, env: env() });
    expect(await readdir(out)).toEqual(['c.tar']);
  }, 120_000);

  it("an export to the directory leaves a running export's partial archive alone: both complete", async () => {
    const out = join(cwd, 'live');
    await mkdir(out);
    const running = await exportUnderway(join(out, 'b.tar'), out);
    await cairnJson(['backup', 'export', backupId, '--archive', join(out, 'c.tar')], { cwd, env: env() });
    const r = await running.exit;
    expect(r.code, r.stderr).toBe(0);
    expect((await readdir(out)).sort()).toEqual(['b.tar', 'c.tar']);
  }, 120_000);
});
