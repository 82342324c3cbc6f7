import { mkdir, readdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOwnedTempDir, removeDeadTempDirs } from '../src/io/owned-temp-dir.js';
import { removeDir, tempDir } from './helpers.js';

/** The contract's grace for an owner-less directory (OWNERLESS_GRACE_MS): 10 minutes. */
const GRACE_MS = 10 * 60 * 1000;

/**
 * A process killed between making its owned directory (mkdtemp) and writing the owner file in it,
 * or while removing it (the owner file may go first), leaves a directory with no owner file. The
 * sweep removes such a directory once it and everything in it have been quiet (mtime) for
 * 10 minutes (OWNERLESS_GRACE_MS), and keeps one that is fresh anywhere inside, as well as links, other names,
 * and owner files it cannot read.
 */
describe('removeDeadTempDirs: owner-less directories', () => {
  let base: string;
  let n = 0;
  beforeAll(async () => (base = await tempDir('cairn-ownerless-')));
  afterAll(() => removeDir(base));

  const parentDir = async () => {
    const dir = join(base, `case-${++n}`);
    await mkdir(dir);
    return dir;
  };
  /** Sets the mtime (and atime) of each path to `ms` milliseconds ago; children before their directory. */
  const age = async (ms: number, ...paths: string[]) => {
    const t = new Date(Date.now() - ms);
    for (const p of paths) await utimes(p, t, t);
  };
  const old = GRACE_MS + 60_000;

  it('removes an owner-less directory quiet for the grace, with what is in it at any depth', async () => {
    const parent = await parentDir();
    const empty = join(parent, '.cairn-partial-Empty1'); // killed right after mkdtemp
    await mkdir(empty);
    const half = join(parent, '.cairn-partial-Half01'); // killed while writing the owner file, or while removing the directory
    await mkdir(join(half, 'sub'), { recursive: true });
    await writeFile(join(half, '.cairn-staging.json.0a1b2c3d4e5f.tmp'), '{"form');
    await writeFile(join(half, 'sub', 'data'), 'x');
    await age(old, join(half, 'sub', 'data'), join(half, 'sub'), join(half, '.cairn-staging.json.0a1b2c3d4e5f.tmp'), half, empty);

    expect((await removeDeadTempDirs('.cairn-partial-', parent)).sort()).toEqual([empty, half].sort());
    expect(await readdir(parent)).toEqual([]);
  });

  it('keeps an owner-less directory that is fresh, or that holds anything fresh at any depth', async () => {
    const parent = await parentDir();
    const fresh = join(parent, 'cairn-archive-Fresh1'); // being created right now
    await mkdir(fresh);
    const freshEntry = join(parent, 'cairn-archive-Entry1');
    await mkdir(freshEntry);
    await writeFile(join(freshEntry, 'data'), 'being written');
    await age(old, freshEntry);
    const freshDeep = join(parent, 'cairn-archive-Deep01');
    await mkdir(join(freshDeep, 'volumes', 'v'), { recursive: true });
    await writeFile(join(freshDeep, 'volumes', 'v', 'data'), 'being written');
    await age(old, join(freshDeep, 'volumes', 'v'), join(freshDeep, 'volumes'), freshDeep);
    const justInside = join(parent, 'cairn-archive-Grace1'); // a minute short of the grace
    await mkdir(justInside);
    await age(GRACE_MS - 60_000, justInside);

    expect(await removeDeadTempDirs('cairn-archive-', parent)).toEqual([]);
    expect((await readdir(parent)).sort()).toEqual(['cairn-archive-Deep01', 'cairn-archive-Entry1', 'cairn-archive-Fresh1', 'cairn-archive-Grace1']);
  });

  it('keeps old owner-less look-alikes that are not its own: another name, a link, a file, an owner file it cannot read', async () => {
    const parent = await parentDir();
    const target = join(parent, 'target');
    await mkdir(target);
    await mkdir(join(parent, 'cairn-import-longer-name'));
    await mkdir(join(parent, 'cairn-export-Abc12')); // five characters: not mkdtemp's
    await symlink(target, join(parent, 'cairn-import-Link01'));
    await writeFile(join(parent, 'cairn-import-File01'), 'a file');
    await mkdir(join(parent, 'cairn-import-Newer1'));
    await writeFile(join(parent, 'cairn-import-Newer1', 'cairn-staging.json'), '{"format": "cairn-staging/2"}'); // a newer version's owner
    const paths = ['cairn-import-longer-name', 'cairn-export-Abc12', 'cairn-import-File01', 'cairn-import-Newer1/cairn-staging.json', 'cairn-import-Newer1', 'target'];
    await age(old, ...paths.map((p) => join(parent, p)));

    expect(await removeDeadTempDirs('cairn-import-', parent)).toEqual([]);
    expect(await removeDeadTempDirs('cairn-export-', parent)).toEqual([]);
    expect((await readdir(parent)).sort()).toEqual(['cairn-export-Abc12', 'cairn-import-File01', 'cairn-import-Link01', 'cairn-import-Newer1', 'cairn-import-longer-name', 'target']);
  });

  it('createOwnedTempDir sweeps an old owner-less directory of its kind before it makes its own, and keeps a fresh one', async () => {
    const parent = await parentDir();
    const abandoned = join(parent, '.cairn-partial-Old001');
    await mkdir(abandoned);
    await age(old, abandoned);
    const fresh = join(parent, '.cairn-partial-New001');
    await mkdir(fresh);

    const made = await createOwnedTempDir('.cairn-partial-', parent);
    expect((await readdir(parent)).sort()).toEqual([made.slice(parent.length + 1), '.cairn-partial-New001'].sort());
    expect(await readdir(made)).toEqual(['cairn-staging.json']);
  });
});
