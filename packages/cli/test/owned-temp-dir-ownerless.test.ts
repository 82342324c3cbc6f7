import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOwnedTempDir, removeDeadTempDirs, removeOwnedTempDir, removeOwnedTempDirSync } from '../src/io/owned-temp-dir.js';
import { removeDir, tempDir } from './helpers.js';

/** The contract's grace for an owner-less directory (OWNERLESS_GRACE_MS): 10 minutes. */
const GRACE_MS = 10 * 60 * 1000;

/**
 * A process killed between making its owned directory (mkdtemp) and writing the owner file in it,
 * or at the end of removing it (removeOwnedTempDir takes the owner file last), leaves a directory
 * with no owner file and nothing but the owner file's temporary files. The sweep removes such a
 * directory once it and they have been quiet (mtime) for 10 minutes (OWNERLESS_GRACE_MS), and
 * keeps one that is fresh, one holding anything else (a user's directory named like ours), links,
 * other names, and owner files it cannot read.
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

  it('removes an owner-less directory quiet for the grace that holds nothing, or only owner-file temporary files', async () => {
    const parent = await parentDir();
    const empty = join(parent, '.cairn-partial-Empty1'); // killed right after mkdtemp, or at the end of its removal
    await mkdir(empty);
    const half = join(parent, '.cairn-partial-Half01'); // killed while writing the owner file
    await mkdir(half);
    await writeFile(join(half, '.cairn-staging.json.0a1b2c3d4e5f.tmp'), '{"form');
    await age(old, join(half, '.cairn-staging.json.0a1b2c3d4e5f.tmp'), half, empty);

    expect((await removeDeadTempDirs('.cairn-partial-', parent)).sort()).toEqual([empty, half].sort());
    expect(await readdir(parent)).toEqual([]);
  });

  it("keeps an owner-less directory that holds anything else, however old: a user's directory named like ours", async () => {
    const parent = await parentDir();
    // A script's `mktemp -d -t cairn-export-XXXXXX`, holding an image it exported and is still uploading.
    const users = join(parent, 'cairn-export-Abc123');
    await mkdir(join(users, 'sub'), { recursive: true });
    await writeFile(join(users, 'disk.qcow2'), 'image');
    await writeFile(join(users, 'sub', 'notes'), 'x');
    // An owner-file temporary file beside a file of the user's is no licence either.
    const mixed = join(parent, 'cairn-export-Mixed1');
    await mkdir(mixed);
    await writeFile(join(mixed, '.cairn-staging.json.0a1b2c3d4e5f.tmp'), '{"form');
    await writeFile(join(mixed, 'keep'), 'mine');
    // A directory named as an owner-file temporary file is not one.
    const dirNamedTemp = join(parent, 'cairn-export-DirTmp');
    await mkdir(join(dirNamedTemp, '.cairn-staging.json.0a1b2c3d4e5f.tmp'), { recursive: true });
    const paths = ['cairn-export-Abc123/sub/notes', 'cairn-export-Abc123/sub', 'cairn-export-Abc123/disk.qcow2', 'cairn-export-Abc123', 'cairn-export-Mixed1/.cairn-staging.json.0a1b2c3d4e5f.tmp', 'cairn-export-Mixed1/keep', 'cairn-export-Mixed1', 'cairn-export-DirTmp/.cairn-staging.json.0a1b2c3d4e5f.tmp', 'cairn-export-DirTmp'];
    await age(old, ...paths.map((p) => join(parent, p)));

    expect(await removeDeadTempDirs('cairn-export-', parent)).toEqual([]);
    expect((await readdir(parent)).sort()).toEqual(['cairn-export-Abc123', 'cairn-export-DirTmp', 'cairn-export-Mixed1']);
    expect((await readdir(users)).sort()).toEqual(['disk.qcow2', 'sub']);
    expect(await readFile(join(users, 'disk.qcow2'), 'utf8')).toBe('image');
  });

  it('keeps an owner-less directory that is fresh, or whose owner-file temporary file is', async () => {
    const parent = await parentDir();
    const fresh = join(parent, 'cairn-archive-Fresh1'); // being created right now
    await mkdir(fresh);
    const freshEntry = join(parent, 'cairn-archive-Entry1'); // its owner file being written
    await mkdir(freshEntry);
    await writeFile(join(freshEntry, '.cairn-staging.json.0a1b2c3d4e5f.tmp'), '{"form');
    await age(old, freshEntry);
    const justInside = join(parent, 'cairn-archive-Grace1'); // a minute short of the grace
    await mkdir(justInside);
    await age(GRACE_MS - 60_000, justInside);

    expect(await removeDeadTempDirs('cairn-archive-', parent)).toEqual([]);
    expect((await readdir(parent)).sort()).toEqual(['cairn-archive-Entry1', 'cairn-archive-Fresh1', 'cairn-archive-Grace1']);
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

/**
 * removeOwnedTempDir takes the owner file last, so that a removal cut short leaves either the
 * owner file (the directory is judged by its owner) or an empty directory, never an owner-less one
 * with data in it (which the sweep keeps, as it may be a user's).
 */
describe('removeOwnedTempDir', () => {
  let base: string;
  beforeAll(async () => (base = await tempDir('cairn-owned-remove-')));
  afterAll(() => removeDir(base));

  it('removes the directory and all it holds; a missing one is no error', async () => {
    const dir = await createOwnedTempDir('cairn-archive-', base);
    await mkdir(join(dir, 'volumes', 'v'), { recursive: true });
    await writeFile(join(dir, 'volumes', 'v', 'data'), 'x');
    await removeOwnedTempDir(dir);
    expect(await readdir(base)).toEqual([]);
    await removeOwnedTempDir(dir);
    const sync = await createOwnedTempDir('.cairn-partial-', base);
    await writeFile(join(sync, 'file'), 'x');
    removeOwnedTempDirSync(sync);
    expect(await readdir(base)).toEqual([]);
    removeOwnedTempDirSync(sync);
  });

  it.skipIf(process.getuid?.() !== 0)('keeps the owner file when something in the directory cannot be removed (a busy mount point)', async () => {
    const dir = await createOwnedTempDir('cairn-archive-', base);
    const mnt = join(dir, 'mnt');
    await mkdir(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    try {
      await expect(removeOwnedTempDir(dir)).rejects.toMatchObject({ code: 'EBUSY' });
      expect(() => removeOwnedTempDirSync(dir)).toThrow(/EBUSY/);
      expect((await readdir(dir)).sort()).toEqual(['cairn-staging.json', 'mnt']);
    } finally {
      execFileSync('umount', [mnt]);
    }
    await removeOwnedTempDir(dir);
    expect(await readdir(base)).toEqual([]);
  });
});
