import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, afterAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, killedEnv, MiB, removeDir, tempDir, writeKillHook } from './helpers.js';

/**
 * A `volume delete` SIGKILLed part-way, then retried: real `cairn` processes and a real file
 * volume in a temporary directory. The kill is the process's own SIGKILL from a preloaded hook
 * (`--require`), at the removal of the volume's image: the driver has then renamed its sidecar
 * `<id>.deleting` (the volume is gone from every listing), its image still there.
 */
describe('volume delete retried after a delete killed part-way', () => {
  let cwd: string;
  let hook: string;
  const volumesDir = () => join(cwd, '.cairn', 'volumes', 'volumes');
  /** The entries of the file driver's volume directory named after `id`. */
  const filesOf = async (id: string) => (await readdir(volumesDir())).filter((n) => n.startsWith(id)).sort();

  beforeAll(async () => {
    cwd = await tempDir();
    // SIGKILLs its own process at the first rm of a volume image.
    hook = await writeKillHook(join(cwd, 'kill-at-image-rm.cjs'), 'rm', /\/volumes\/volumes\/[^/]+\.img$/);
    await writeFile(join(cwd, 'a.raw'), Buffer.alloc(2 * MiB, 7));
  }, 120_000);
  afterAll(async () => {
    await removeDir(cwd);
  });

  /** A volume named `name`, whose `volume delete <ref(id)>` was SIGKILLed at its image's removal: its id. */
  async function killedDelete(name: string, ref: (id: string) => string): Promise<string> {
    const imported = await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', name], { cwd });
    const id: string = imported.volume?.id ?? imported.id;
    const killed = await cairn(['volume', 'delete', ref(id)], { cwd, env: killedEnv(hook) });
    expect(killed.code, killed.stderr).not.toBe(0);
    expect(await filesOf(id)).toContain(`${id}.deleting`);
    expect(await filesOf(id)).toContain(`${id}.img`);
    return id;
  }

  it('a retry by id finishes the delete and reports it deleted (exit 0, the output of a delete); then, and for an id never known, NOT_FOUND', async () => {
    const id = await killedDelete('by-id', (x) => x);

    const again = await cairn(['volume', 'delete', id, '--json'], { cwd });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual({ deleted: id });
    expect(await filesOf(id)).toEqual([]);

    for (const gone of [id, 'never-existed', '00000000-0000-4000-8000-000000000000']) {
      const r = await cairn(['volume', 'delete', gone, '--json'], { cwd });
      expect(r.code, r.stderr).toBe(3);
      expect(jsonError(r).code).toBe('NOT_FOUND');
    }
  });

  it('a retry by id in text form prints the line of a normal delete', async () => {
    const id = await killedDelete('text', (x) => x);
    const again = await cairn(['volume', 'delete', id], { cwd });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.trim()).toBe(`deleted volume ${id}`);
  });

  it('a retry by name finishes the delete but is NOT_FOUND: the name went with the volume record', async () => {
    const id = await killedDelete('by-name', () => 'by-name');
    const again = await cairn(['volume', 'delete', 'by-name', '--json'], { cwd });
    expect(again.code, again.stderr).toBe(3);
    expect(jsonError(again).code).toBe('NOT_FOUND');
    expect(await filesOf(id)).toEqual([]);
  });
});
