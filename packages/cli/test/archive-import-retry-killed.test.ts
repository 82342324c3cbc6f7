import { randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, tempDir } from './helpers.js';

/**
 * A `backup import` SIGKILLed part-way, then retried plainly: real `cairn` processes, real posix
 * repositories and file volumes in temporary directories. The kill is the process's own SIGKILL
 * from a preloaded hook (`--require`), at the point CAIRN_TEST_KILL names: `staging` (the claim is
 * written, the archive not yet staged, nothing in the repository), `manifest` (just after the
 * backup's manifest landed, before the record is `available`). `fail-pack` fails the first pack's
 * write with ENOSPC instead: an import's own failure, not an interruption.
 */
describe('backup import retried after an import killed part-way', () => {
  let src: string;
  let hook: string;
  let data: Buffer;
  let id: string;
  let archive: string;
  const dirs: string[] = [];
  const fresh = async () => {
    const d = await tempDir();
    dirs.push(d);
    return d;
  };
  const killedImport = (cwd: string, at: string) => cairn(['backup', 'import', archive], { cwd, env: { NODE_OPTIONS: `--require ${hook}`, CAIRN_TEST_KILL: at } });
  // Manifests by name (a kill may leave a temporary `~tmp-…` file beside them: not one).
  const manifests = async (cwd: string) => (await readdir(join(cwd, '.cairn/repository/manifests')).catch(() => [] as string[])).filter((n) => !n.startsWith('~'));
  const list = async (cwd: string) => (await cairnJson(['backup', 'list'], { cwd })).map((b: { id: string; status: string }) => [b.id, b.status]);

  beforeAll(async () => {
    src = await tempDir();
    hook = join(src, 'kill-hook.cjs');
    await writeFile(
      hook,
      `const fs = require('fs'); const fsp = fs.promises;
const at = process.env.CAIRN_TEST_KILL;
const die = () => process.kill(process.pid, 'SIGKILL');
const isManifest = (p) => /\\/repository\\/manifests\\/[^~\\/][^\\/]*$/.test(String(p));
const isPack = (p) => /\\/repository\\/packs\\/[^\\/]+\\/[^~\\/][^\\/]*$/.test(String(p));
const mkdir = fsp.mkdir, mkdirSync = fs.mkdirSync, link = fsp.link, linkSync = fs.linkSync;
fsp.mkdir = async function (...a) { if (at === 'staging' && String(a[0]).includes('/.cairn/staging')) die(); return mkdir.apply(this, a); };
fs.mkdirSync = function (...a) { if (at === 'staging' && String(a[0]).includes('/.cairn/staging')) die(); return mkdirSync.apply(this, a); };
fsp.link = async function (...a) {
  if (at === 'fail-pack' && isPack(a[1])) throw Object.assign(new Error('ENOSPC: no space left on device, link'), { code: 'ENOSPC', errno: -28, syscall: 'link' });
  const r = await link.apply(this, a);
  if (at === 'manifest' && isManifest(a[1])) die();
  return r;
};
fs.linkSync = function (...a) { const r = linkSync.apply(this, a); if (at === 'manifest' && isManifest(a[1])) die(); return r; };
require('module').syncBuiltinESMExports();
`,
    );
    data = randomBytes(16 * MiB);
    await writeFile(join(src, 'a.raw'), data);
    await cairnJson(['volume', 'import', join(src, 'a.raw'), '--name', 'a'], { cwd: src });
    id = (await cairnJson(['backup', 'create', 'a'], { cwd: src })).id;
    archive = join(src, 'a.tar');
    await cairnJson(['backup', 'export', id, '--archive', archive], { cwd: src });
  }, 120_000);
  afterAll(async () => {
    await removeDir(src);
    for (const d of dirs) await removeDir(d);
  });

  /** The import is complete: listed available alone, verifies after a gc, restores byte-exact. */
  const assertImported = async (cwd: string) => {
    expect(await list(cwd)).toEqual([[id, 'available']]);
    expect(await manifests(cwd)).toEqual([id]);
    await cairnJson(['repo', 'gc'], { cwd });
    expect(await cairnJson(['backup', 'verify', id], { cwd })).toMatchObject({ checked: [id], problems: [] });
    const restored = await cairnJson(['backup', 'restore', id, '--new'], { cwd });
    await cairnJson(['volume', 'export', restored.volume.id, join(cwd, 'r.raw')], { cwd });
    expect((await readFile(join(cwd, 'r.raw'))).equals(data)).toBe(true);
  };

  it('killed after its claim, before any data: the plain retry recovers the claim and imports the archive (exit 0)', async () => {
    const cwd = await fresh();
    const killed = await killedImport(cwd, 'staging');
    expect(killed.code, killed.stderr).not.toBe(0);
    expect((await cairnJson(['backup', 'show', id], { cwd })).status).toBe('creating');
    expect(await manifests(cwd)).toEqual([]);

    const again = await cairn(['backup', 'import', archive, '--json'], { cwd });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ id, status: 'available' });
    expect(again.stderr).toContain('recovered 1 item(s) left in flight by an earlier run');
    await assertImported(cwd);
  });

  it('killed once its manifest landed: the retry deletes that manifest and writes the backup again (exit 0)', async () => {
    const cwd = await fresh();
    const killed = await killedImport(cwd, 'manifest');
    expect(killed.code, killed.stderr).not.toBe(0);
    expect(await manifests(cwd)).toEqual([id]);
    expect((await cairnJson(['backup', 'show', id], { cwd })).status).toBe('creating');

    const again = await cairn(['backup', 'import', archive, '--json'], { cwd });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ id, status: 'available' });
    await assertImported(cwd);
  });

  it('killed twice (before data, then after the manifest), the third run imports it; an import that failed on its own stays ALREADY_EXISTS', async () => {
    const cwd = await fresh();
    expect((await killedImport(cwd, 'staging')).code).not.toBe(0);
    expect((await killedImport(cwd, 'manifest')).code).not.toBe(0);
    expect((await cairnJson(['backup', 'import', archive], { cwd })).status).toBe('available');
    await assertImported(cwd);

    // Not an interruption: the import's own failure keeps its record (delete it to import again).
    const other = await fresh();
    const failed = await killedImport(other, 'fail-pack');
    expect(failed.code, failed.stderr).not.toBe(0);
    expect((await cairnJson(['backup', 'show', id], { cwd: other })).status).toBe('error');
    const again = await cairn(['backup', 'import', archive, '--json'], { cwd: other });
    expect(again.code, again.stderr).toBe(4);
    expect(jsonError(again)).toMatchObject({ code: 'ALREADY_EXISTS', details: { backupId: id, status: 'error' } });
    expect(await list(other)).toEqual([[id, 'error']]);
  });
});
