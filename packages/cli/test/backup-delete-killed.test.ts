import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, killedEnv, MiB, removeDir, tempDir, writeKillHook } from './helpers.js';

/**
 * A `backup delete` SIGKILLed part-way, then retried: real `cairn` processes, a real posix
 * repository and file volume in a temporary directory. The kill is the process's own SIGKILL
 * from a preloaded hook (`--require`), at the unlink of the backup's manifest: its record is then
 * `deleting`, its data partly gone.
 */
describe('backup delete retried after a delete killed part-way', () => {
  let cwd: string;
  let hook: string;

  beforeAll(async () => {
    cwd = await tempDir();
    // SIGKILLs its own process at the first unlink of a file under repository/manifests/.
    hook = await writeKillHook(join(cwd, 'kill-at-manifest-unlink.cjs'), 'unlink', /\/repository\/manifests\//);
    await writeFile(join(cwd, 'a.raw'), Buffer.alloc(4 * MiB, 7));
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
  }, 120_000);
  afterAll(async () => {
    await removeDir(cwd);
  });

  it('the retry finishes the delete in its recovery and reports it deleted (exit 0, the output of a delete); an id that never existed stays NOT_FOUND', async () => {
    const id: string = (await cairnJson(['backup', 'create', 'a'], { cwd })).id;
    const killed = await cairn(['backup', 'delete', id], { cwd, env: killedEnv(hook) });
    expect(killed.code, killed.stderr).not.toBe(0);
    expect((await cairnJson(['backup', 'show', id], { cwd })).status).toBe('deleting');

    const again = await cairn(['backup', 'delete', id, '--json'], { cwd });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual({ deleted: id });
    expect(again.stderr).toContain('recovered 1 item(s) left in flight by an earlier run');
    const shown = await cairn(['backup', 'show', id, '--json'], { cwd });
    expect(shown.code).toBe(3);
    expect(jsonError(shown).code).toBe('NOT_FOUND');

    // Now gone: a delete with nothing left to recover is NOT_FOUND, as one of an id never known.
    for (const gone of [id, 'never-existed']) {
      const r = await cairn(['backup', 'delete', gone, '--json'], { cwd });
      expect(r.code, r.stderr).toBe(3);
      expect(jsonError(r).code).toBe('NOT_FOUND');
    }
    expect((await cairnJson(['repo', 'verify'], { cwd })).problems ?? []).toEqual([]);
  });

  it('the retry of a killed delete in text form prints the line of a normal delete', async () => {
    const id: string = (await cairnJson(['backup', 'create', 'a'], { cwd })).id;
    const killed = await cairn(['backup', 'delete', id], { cwd, env: killedEnv(hook) });
    expect(killed.code, killed.stderr).not.toBe(0);
    const again = await cairn(['backup', 'delete', id], { cwd });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.trim()).toBe(`deleted backup ${id}`);
  });
});
