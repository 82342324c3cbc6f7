import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnSpawn, jsonError, MiB, removeDir, tempDir, writeRawImage, type CliResult } from './helpers.js';

/**
 * SIGINT/SIGTERM in the middle of the long commands that are not manager jobs (volume import and
 * export, backup export and import): the command is cancelled (exit 130, CANCELLED) and cleans up
 * as on any failure, so the next run finds nothing half-made: no new volume under the image's
 * name, no temporary file beside the output, no staging volume in the staging directory, no
 * claimed record.
 */
describe('signals during volume import/export and backup export/import', () => {
  let cwd: string;
  let tmp: string;
  let image: string;
  let backupId: string;
  let archive: string;
  const env = () => ({ TMPDIR: tmp });

  /** Starts `args`, sends `sig` once `ready()` holds (polled), and resolves with the result. */
  async function interrupt(args: string[], sig: NodeJS.Signals, ready: (stderr: () => string) => Promise<boolean>, dir = cwd): Promise<CliResult> {
    let err = '';
    const { child, exit } = cairnSpawn([...args, '--json'], { cwd: dir, env: env() });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    let settled = false;
    void exit.then(() => (settled = true));
    for (let i = 0; i < 600 && !settled; i++) {
      if (await ready(() => err)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(settled, 'the command ended before it could be interrupted').toBe(false);
    child.kill(sig);
    return exit;
  }
  const progressed = (label: string) => async (stderr: () => string) => stderr().includes(`${label}:`);
  const staged = async () => (await readdir(tmp)).some((n) => n.startsWith('cairn-archive-'));

  beforeAll(async () => {
    cwd = await tempDir();
    tmp = join(cwd, 'tmp');
    await mkdir(tmp);
    image = join(cwd, 'disk.raw');
    await writeRawImage(image, 256 * MiB);
    await cairnJson(['volume', 'import', image, '--name', 'disk'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'disk'], { cwd })).id;
    archive = join(cwd, 'disk.tar');
    await cairnJson(['backup', 'export', backupId, '--archive', archive], { cwd });
  }, 300_000);
  afterAll(async () => {
    await removeDir(cwd);
  });

  it('volume import of a new volume interrupted by SIGINT exits 130 and deletes the half-written volume', async () => {
    const r = await interrupt(['volume', 'import', image, '--name', 'again'], 'SIGINT', progressed('import'));
    expect(r.code, r.stderr).toBe(130);
    expect(jsonError(r).code).toBe('CANCELLED');
    const names = (await cairnJson(['volume', 'list'], { cwd })).map((v: { name: string }) => v.name);
    expect(names).toEqual(['disk']);
  }, 60_000);

  it('volume export interrupted by SIGTERM exits 130 and leaves no temporary file', async () => {
    const out = join(cwd, 'vol-out');
    await mkdir(out);
    const r = await interrupt(['volume', 'export', 'disk', join(out, 'disk.raw')], 'SIGTERM', progressed('export'));
    expect(r.code, r.stderr).toBe(130);
    expect(jsonError(r).code).toBe('CANCELLED');
    expect(await readdir(out)).toEqual([]);
  }, 60_000);

  it('backup export interrupted by SIGINT exits 130 and leaves neither a temporary archive nor a staging volume', async () => {
    const out = join(cwd, 'archive-out');
    await mkdir(out);
    const r = await interrupt(['backup', 'export', backupId, '--archive', join(out, 'b.tar'), '--staging-dir', tmp], 'SIGINT', progressed('export'));
    expect(r.code, r.stderr).toBe(130);
    expect(jsonError(r).code).toBe('CANCELLED');
    expect(await readdir(out)).toEqual([]);
    expect(await readdir(tmp)).toEqual([]);
  }, 60_000);

  it('backup import interrupted by SIGINT while the archive is checked exits 130, removes its claim and staging, and the next import succeeds', async () => {
    const other = join(cwd, 'other');
    await mkdir(other);
    const r = await interrupt(['backup', 'import', archive, '--staging-dir', tmp], 'SIGINT', staged, other);
    expect(r.code, r.stderr).toBe(130);
    expect(jsonError(r).code).toBe('CANCELLED');
    expect(await readdir(tmp)).toEqual([]);
    expect(await cairnJson(['backup', 'list'], { cwd: other })).toEqual([]);
    const again = await cairn(['backup', 'import', archive, '--json'], { cwd: other, env: env() });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ id: backupId, status: 'available' });
  }, 120_000);
});
