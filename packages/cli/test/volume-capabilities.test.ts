import { execFileSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, MiB, removeDir, tempDir, writeQcow2DeploymentConfig } from './helpers.js';

/**
 * `volume show` and `volume list` show what a volume lacks of its driver's capabilities
 * (Volume.capabilities): a qcow2 version 2 image (`compat=0.10`, made outside Cairn and put in
 * place of a volume's image) has no changed-block tracking. A volume that lacks nothing shows none.
 */
describe('volume show/list: a volume without changed-block tracking', () => {
  let cwd: string;
  let oldId: string;
  let newId: string;
  const json = <T = any>(args: string[]) => cairnJson<T>(args, { cwd });

  beforeAll(async () => {
    cwd = await tempDir('cairn-caps-');
    await writeQcow2DeploymentConfig(cwd);
    oldId = (await json(['volume', 'create', 'old', '--size', '4MiB'])).id;
    newId = (await json(['volume', 'create', 'new', '--size', '4MiB'])).id;
    const image = join(cwd, 'qcow2', 'volumes', `${oldId}.qcow2`);
    await rm(image);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', image, String(4 * MiB)]);
  }, 60_000);
  afterAll(() => removeDir(cwd));

  it('JSON: capabilities {changedBlockTracking: false} for the version 2 volume, no capabilities for the other', async () => {
    const shown = await json(['volume', 'show', 'old']);
    expect(shown).toMatchObject({ id: oldId, capabilities: { changedBlockTracking: false } });
    expect(await json(['volume', 'show', 'new'])).not.toHaveProperty('capabilities');
    const list = await json<{ id: string; capabilities?: unknown }[]>(['volume', 'list']);
    expect(list.find((v) => v.id === oldId)?.capabilities).toEqual({ changedBlockTracking: false });
    expect(list.find((v) => v.id === newId)).not.toHaveProperty('capabilities');
  }, 60_000);

  it('text: show says the volume has no changed-block tracking; list notes it on its row only', async () => {
    const old = await cairn(['volume', 'show', 'old'], { cwd });
    expect(old.code, old.stderr).toBe(0);
    expect(old.stdout).toMatch(/^capabilities:\s+no changed-block tracking/m);
    const other = await cairn(['volume', 'show', 'new'], { cwd });
    expect(other.code, other.stderr).toBe(0);
    expect(other.stdout).not.toContain('capabilities');
    const list = await cairn(['volume', 'list'], { cwd });
    expect(list.code, list.stderr).toBe(0);
    const lines = list.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/\bNOTES$/);
    expect(lines.find((l) => l.startsWith(oldId))).toMatch(/no changed-block tracking$/);
    expect(lines.find((l) => l.startsWith(newId))).toMatch(/\s-$/);
  }, 60_000);
});
