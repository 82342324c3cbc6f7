import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { cairn, cairnJson, MiB, removeDir, tempDir, writeDeploymentConfig, writeRawImage, jsonError } from './helpers.js';

describe('cairn backup', () => {
  let cwd: string;
  let volumeId: string;
  let fullData: Buffer;
  let incData: Buffer;
  let full: any;
  let inc: any;
  const run = (args: string[], input?: string) => cairn(args, { cwd, input });
  const json = (args: string[]) => cairnJson(args, { cwd });

  beforeAll(async () => {
    cwd = await tempDir();
    fullData = await writeRawImage(join(cwd, 'src.raw'), 4 * MiB);
    volumeId = (await json(['volume', 'import', join(cwd, 'src.raw'), '--name', 'src'])).volume.id;
  });
  afterAll(() => removeDir(cwd));

  it('backup create --json returns an available full backup with stats', async () => {
    full = await json(['backup', 'create', 'src', '--name', 'first', '--description', 'the full one']);
    expect(full).toMatchObject({ name: 'first', description: 'the full one', volumeId, size: 4 * MiB, status: 'available', target: 'posix', incremental: false });
    expect(full.stats.bytesRead).toBeGreaterThan(0);
    expect(full.stats.bytesStored).toBeGreaterThan(0);
  });

  it('backup create --incremental reads only changed data and names its parent', async () => {
    incData = Buffer.from(fullData);
    randomBytes(65536).copy(incData, 2 * MiB);
    await writeFile(join(cwd, 'changed.raw'), incData);
    await json(['volume', 'import', join(cwd, 'changed.raw'), '--into', volumeId]);
    inc = await json(['backup', 'create', volumeId, '--incremental', '--name', 'second']);
    expect(inc).toMatchObject({ incremental: true, parentId: full.id, status: 'available' });
    expect(inc.stats.bytesRead).toBeLessThan(full.stats.bytesRead);
  });

  it('backup list --json lists both oldest first; --volume filters; show and children find them', async () => {
    const all = await json(['backup', 'list']);
    expect(all.map((b: { id: string }) => b.id)).toEqual([full.id, inc.id]);
    expect(Object.keys(all[0]).sort()).toEqual(
      ['createdAt', 'description', 'id', 'incremental', 'name', 'size', 'stats', 'status', 'target', 'updatedAt', 'volumeId', 'volumeName'].sort(),
    );
    expect(await json(['backup', 'list', '--volume', 'src'])).toHaveLength(2);
    expect(await json(['backup', 'list', '--volume', 'no-such-volume'])).toEqual([]);
    expect(await json(['backup', 'show', inc.id])).toMatchObject({ id: inc.id, parentId: full.id });
    expect((await json(['backup', 'children', full.id])).map((b: { id: string }) => b.id)).toEqual([inc.id]);
    const table = await run(['backup', 'list']);
    expect(table.stdout).toMatch(/^ID\s+NAME\s+VOLUME\s+TYPE/);
  });

  it('backup show/children/delete of an unknown id exit 3 (NOT_FOUND) with a JSON error', async () => {
    for (const cmd of [['backup', 'show', 'nope'], ['backup', 'children', 'nope'], ['backup', 'delete', 'nope'], ['backup', 'restore', 'nope', '--new']]) {
      const r = await run([...cmd, '--json']);
      expect(r.code, cmd.join(' ')).toBe(3);
      expect(jsonError(r).code).toBe('NOT_FOUND');
    }
  });

  it('backup restore --new restores each backup byte-exact as of its time', async () => {
    for (const [b, data] of [[full, fullData], [inc, incData]] as const) {
      const r = await json(['backup', 'restore', b.id, '--new', '--name', `restored-${b.name}`]);
      expect(r).toMatchObject({ backup: { id: b.id, status: 'available' }, volume: { name: `restored-${b.name}`, status: 'available' } });
      const out = join(cwd, `${b.name}.raw`);
      await json(['volume', 'export', r.volume.id, out]);
      expect((await readFile(out)).equals(data)).toBe(true);
    }
  });

  it('backup restore --to overwrites an existing volume; a too-small volume is INVALID_INPUT (exit 2)', async () => {
    const target = await json(['volume', 'create', 'dest', '--size', '4MiB']);
    await json(['backup', 'restore', full.id, '--to', 'dest']);
    await json(['volume', 'export', target.id, join(cwd, 'dest.raw')]);
    expect((await readFile(join(cwd, 'dest.raw'))).equals(fullData)).toBe(true);
    await json(['volume', 'create', 'tiny', '--size', '1MiB']);
    expect((await run(['backup', 'restore', full.id, '--to', 'tiny'])).code).toBe(2);
    expect((await run(['backup', 'restore', full.id])).code).toBe(2);
  });

  it('backup verify checks one backup and all backups, exit 0 when intact', async () => {
    const one = await json(['backup', 'verify', full.id]);
    expect(one).toMatchObject({ checked: [full.id], problems: [] });
    const all = await json(['backup', 'verify']);
    expect(all.checked.sort()).toEqual([full.id, inc.id].sort());
    expect(all.bytesChecked).toBeGreaterThan(0);
  });

  it('backup export-record / import-record move a record to a deployment that reaches the same repository', async () => {
    const rec = await run(['backup', 'export-record', full.id]);
    expect(rec.code, rec.stderr).toBe(0);
    const doc = JSON.parse(rec.stdout);
    expect(doc).toMatchObject({ service: 'posix' });
    expect(typeof doc.record).toBe('string');
    // A second deployment: its own catalog (default target), plus this repository as `shared`.
    const other = await tempDir();
    try {
      const config = {
        volumeDrivers: { file: { plugin: 'file', options: { directory: 'volumes' } } },
        targets: {
          local: { plugin: 'posix', options: { directory: 'repo', repository: { init: true } } },
          shared: { plugin: 'posix', options: { directory: join(cwd, '.cairn/repository') } },
        },
      };
      await writeFile(join(other, 'cairn.config.json'), JSON.stringify(config));
      const o = (args: string[], input?: string) => cairn(args, { cwd: other, input });
      expect(JSON.parse((await o(['backup', 'list', '--json'])).stdout)).toEqual([]);
      const imported = await o(['backup', 'import-record', '--target', 'shared', '--json'], rec.stdout);
      expect(imported.code, imported.stderr).toBe(0);
      expect(JSON.parse(imported.stdout)).toMatchObject({ id: full.id, target: 'shared', status: 'available' });
      const again = await o(['backup', 'import-record', '--target', 'shared', '--json'], rec.stdout);
      expect(again.code).toBe(4);
      expect(jsonError(again).code).toBe('ALREADY_EXISTS');
      const restored = JSON.parse((await o(['backup', 'restore', full.id, '--new', '--json'])).stdout);
      await cairnJson(['volume', 'export', restored.volume.id, join(other, 'r.raw')], { cwd: other });
      expect((await readFile(join(other, 'r.raw'))).equals(fullData)).toBe(true);
      const foreign = await o(['backup', 'import-record', '--target', 'local', '--json'], rec.stdout);
      expect(foreign.code).toBe(2);
      expect((await o(['backup', 'import-record', '--json'], 'not json')).code).toBe(2);
    } finally {
      await removeDir(other);
    }
  });

  it('backup delete removes a backup; list no longer shows it', async () => {
    expect(await json(['backup', 'delete', inc.id])).toEqual({ deleted: inc.id });
    expect((await json(['backup', 'list'])).map((b: { id: string }) => b.id)).toEqual([full.id]);
    expect((await run(['backup', 'show', inc.id])).code).toBe(3);
  });

  it('backup cancel of an unknown job exits 3 and backup jobs lists none', async () => {
    expect((await run(['backup', 'cancel', 'no-such-job'])).code).toBe(3);
    expect(await json(['backup', 'jobs'])).toEqual([]);
  });
});

describe("the CLI's repository warnings", () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  it('a backup whose repository locks cannot be released is available, and the warning naming them goes to Output.warn (stderr), as the manager\'s do', async () => {
    const config = await writeDeploymentConfig(cwd);
    const v = await cairnJson(['volume', 'create', 'v', '--size', '1MiB'], { cwd });
    const warnings: string[] = [];
    const out = new Output({ quiet: true });
    out.warn = (message) => void warnings.push(message);
    // In this process, as `cairn backup create` and `cairn serve` build it: one context, its targets and manager.
    const ctx = await CliContext.create({ config }, out);
    try {
      const { repository } = await ctx.repository();
      const del = repository.store.delete.bind(repository.store);
      // The store refuses to delete the backup's locks (record locks, which the catalog takes, still go).
      repository.store.delete = async (key) => {
        if (key.startsWith('locks/') && !key.startsWith('locks/record-')) throw new CairnError('UNAVAILABLE', 'the store refuses this delete', { driver: 'test' });
        return del(key);
      };
      expect((await (await ctx.manager()).backup({ volumeId: v.id })).status).toBe('available');
      const left = (await repository.locks.list()).map((l) => l.id);
      expect(left).toHaveLength(2);
      expect(warnings).toHaveLength(1);
      for (const id of left) expect(warnings[0]).toContain(id);
    } finally {
      await ctx.close();
    }
  });
});

describe("a job's cancel hint", () => {
  let cwd: string;
  beforeAll(async () => {
    cwd = await tempDir();
  });
  afterAll(() => removeDir(cwd));
  const startedLine = (stderr: string) => stderr.split('\n').find((l) => / job \S+ started \(/.test(l)) ?? '';

  it('names the config by its absolute path, so that the command finds the job from any directory', async () => {
    const deployment = join(cwd, 'deployment');
    await mkdir(deployment);
    const config = await writeDeploymentConfig(deployment);
    await cairn(['volume', 'create', 'v', '--size', '1MiB', '--config', config], { cwd: deployment });
    const r = await cairn(['backup', 'create', 'v', '--config', 'cairn.config.json'], { cwd: deployment });
    expect(r.code, r.stderr).toBe(0);
    expect(startedLine(r.stderr)).toMatch(new RegExp(`cancel with: cairn backup cancel \\S+ --config ${config.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\)`));
  });

  it('on the embedded defaults (state under the working directory) says to run it from there', async () => {
    const bare = join(cwd, 'bare');
    await mkdir(bare);
    await cairn(['volume', 'create', 'v', '--size', '1MiB'], { cwd: bare });
    const r = await cairn(['backup', 'create', 'v'], { cwd: bare });
    expect(r.code, r.stderr).toBe(0);
    expect(startedLine(r.stderr)).toContain(`cancel with: cairn backup cancel `);
    expect(startedLine(r.stderr)).toContain(`, from ${bare})`);
  });
});
