import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm as realRm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { currentOwner, newId } from '@cairn/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Layout } from '../src/layout.js';
import { prepareViewsDir, UNOWNED_VIEWS_GRACE_MS, type LockProbe } from '../src/views-dir.js';

/** Paths under which `rm` fails as for a directory of another user (EACCES). */
const refused: string[] = [];
/** A directory watched while it is made: every mkdir, rename and writeFile after which it exists without its owner file. */
const watch: { dir?: string; bare: string[] } = { bare: [] };
vi.mock('node:fs/promises', async (original) => {
  const actual = await original<typeof import('node:fs/promises')>();
  const watched =
    <A extends unknown[], R>(name: string, fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      const result = await fn(...args);
      if (watch.dir && existsSync(watch.dir) && !existsSync(join(watch.dir, 'owner.json'))) watch.bare.push(name);
      return result;
    };
  return {
    ...actual,
    rm: async (path: string, options?: Parameters<typeof actual.rm>[1]) => {
      if (refused.some((p) => String(path).startsWith(p))) throw Object.assign(new Error(`EACCES: permission denied, rm '${path}'`), { code: 'EACCES' });
      return actual.rm(path, options);
    },
    mkdir: watched('mkdir', actual.mkdir as (...args: unknown[]) => Promise<string | undefined>),
    rename: watched('rename', actual.rename),
    writeFile: watched('writeFile', actual.writeFile as (...args: unknown[]) => Promise<void>),
  };
});

afterEach(() => {
  refused.splice(0);
  watch.dir = undefined;
  watch.bare.splice(0);
});

/** A probe that finds every file free of locks. */
const free: LockProbe = async () => 'free';

async function withDir(fn: (layout: Layout) => Promise<void>): Promise<void> {
  const directory = await mkdtemp(join(tmpdir(), 'cairn-views-'));
  try {
    await fn(new Layout(directory, 'me'));
  } finally {
    await realRm(directory, { recursive: true, force: true });
  }
}

/** Sets the modification time of each path to `ms` before now. */
async function age(ms: number, ...paths: string[]): Promise<void> {
  const when = new Date(Date.now() - ms);
  for (const p of paths) await utimes(p, when, when);
}

const HOUR = 60 * 60 * 1000;

describe("prepareViewsDir and a dead instance's directory it cannot remove", () => {
  it('readies this instance anyway, keeps the dead owner named, and removes the directory at a later start', async () => {
    await withDir(async (layout) => {
      const dead = join(layout.viewsRoot, 'dead');
      await mkdir(dead, { recursive: true });
      await writeFile(join(dead, 'owner.json'), JSON.stringify({ ...currentOwner(), pid: 999_999_999, startTime: 1 }));
      await writeFile(join(dead, 'x.qcow2'), 'overlay');
      refused.push(join(dead, 'x.qcow2'), dead);
      await prepareViewsDir(layout, free);
      expect((await readdir(layout.viewsDir)).sort()).toEqual(['owner.json']);
      expect((await readdir(dead)).sort()).toEqual(['owner.json', 'x.qcow2']);
      refused.splice(0);
      await prepareViewsDir(layout, free);
      expect((await readdir(layout.viewsRoot)).sort()).toEqual(['me']);
    });
  });
});

describe("prepareViewsDir and this instance's own directory", () => {
  it('prepareViewsDir never lets this instance\'s directory exist without its owner file, when it makes the directory or finds it', async () => {
    await withDir(async (layout) => {
      watch.dir = layout.viewsDir;
      await prepareViewsDir(layout, free);
      expect((await readdir(layout.viewsDir)).sort()).toEqual(['owner.json']);
      await writeFile(join(layout.viewsDir, 'left.qcow2'), 'overlay of a daemon that died');
      await prepareViewsDir(layout, free);
      expect((await readdir(layout.viewsDir)).sort()).toEqual(['owner.json']);
      expect(watch.bare).toEqual([]);
      expect((await readdir(layout.viewsRoot)).sort()).toEqual(['me']); // no temporary name left
    });
  });
});

describe('prepareViewsDir and entries of views/ that name no owner', () => {
  it('removes a flat-layout overlay and an owner-less directory left unchanged for the grace period, whose files nobody holds', async () => {
    await withDir(async (layout) => {
      await mkdir(layout.viewsRoot, { recursive: true });
      const flat = join(layout.viewsRoot, `${newId()}.qcow2`);
      const bare = join(layout.viewsRoot, newId());
      const damaged = join(layout.viewsRoot, newId());
      await writeFile(flat, 'overlay');
      await mkdir(bare);
      await writeFile(join(bare, 'x.qcow2'), 'overlay');
      await mkdir(damaged);
      await writeFile(join(damaged, 'owner.json'), '{"host":');
      await writeFile(join(damaged, 'y.qcow2'), 'overlay');
      await age(UNOWNED_VIEWS_GRACE_MS + 60_000, flat, join(bare, 'x.qcow2'), bare, join(damaged, 'owner.json'), join(damaged, 'y.qcow2'), damaged);
      const probed: string[] = [];
      await prepareViewsDir(layout, async (path) => (probed.push(path), 'free'));
      expect(await readdir(layout.viewsRoot)).toEqual(['me']);
      expect(probed.sort()).toEqual([flat, join(bare, 'x.qcow2'), join(damaged, 'y.qcow2')].sort());
    });
  });

  it('keeps such entries while any part changed within the grace period, while a file is held or its lock cannot be probed, and keeps other files and directories holding more than files', async () => {
    await withDir(async (layout) => {
      await mkdir(layout.viewsRoot, { recursive: true });
      const path = (name: string): string => join(layout.viewsRoot, name);
      const freshFlat = path(`${newId()}.qcow2`);
      const heldFlat = path(`${newId()}.qcow2`);
      const unknownFlat = path(`${newId()}.qcow2`);
      const notOurs = path('notes.qcow2');
      const freshDir = path(newId()); // made just now, its owner file not yet in it
      const freshFileDir = path(newId()); // old directory, an overlay written just now
      const heldDir = path(newId());
      const nestedDir = path(newId());
      for (const f of [freshFlat, heldFlat, unknownFlat, notOurs]) await writeFile(f, 'overlay');
      for (const d of [freshDir, freshFileDir, heldDir, nestedDir]) {
        await mkdir(d);
        await writeFile(join(d, 'x.qcow2'), 'overlay');
      }
      await mkdir(join(nestedDir, 'sub'));
      const old = UNOWNED_VIEWS_GRACE_MS + 60_000;
      await age(old, heldFlat, unknownFlat, notOurs, freshFileDir, join(heldDir, 'x.qcow2'), heldDir, join(nestedDir, 'x.qcow2'), join(nestedDir, 'sub'), nestedDir);
      await age(old, join(freshDir, 'x.qcow2')); // the directory itself stays fresh
      const held = new Set([heldFlat, join(heldDir, 'x.qcow2')]);
      await prepareViewsDir(layout, async (p) => (held.has(p) ? 'held' : p === unknownFlat ? 'unknown' : 'free'));
      const kept = [freshFlat, heldFlat, unknownFlat, notOurs, freshDir, freshFileDir, heldDir, nestedDir].map((p) => p.slice(layout.viewsRoot.length + 1));
      expect((await readdir(layout.viewsRoot)).sort()).toEqual([...kept, 'me'].sort());
    });
  });

  it("keeps, however old and unheld, a directory whose owner file is JSON of another shape (a newer version's) and one holding a file that is no overlay", async () => {
    await withDir(async (layout) => {
      const newer = join(layout.viewsRoot, newId());
      const other = join(layout.viewsRoot, newId());
      for (const d of [newer, other]) await mkdir(d, { recursive: true });
      await writeFile(join(newer, 'owner.json'), JSON.stringify({ version: 2, owner: currentOwner() }));
      await writeFile(join(newer, 'state'), 'not an image');
      await writeFile(join(other, 'x.qcow2'), 'overlay');
      await writeFile(join(other, 'state'), 'not an image');
      await age(10 * HOUR, join(newer, 'owner.json'), join(newer, 'state'), newer, join(other, 'x.qcow2'), join(other, 'state'), other);
      await prepareViewsDir(layout, free);
      expect((await readdir(layout.viewsRoot)).sort()).toEqual([basename(newer), basename(other), 'me'].sort());
    });
  });

  it('still removes a directory whose owner is provably gone without probing, and keeps one whose owner may be alive however old', async () => {
    await withDir(async (layout) => {
      const gone = join(layout.viewsRoot, 'gone');
      const alive = join(layout.viewsRoot, 'alive');
      for (const d of [gone, alive]) {
        await mkdir(d, { recursive: true });
        await writeFile(join(d, 'x.qcow2'), 'overlay');
      }
      await writeFile(join(gone, 'owner.json'), JSON.stringify({ ...currentOwner(), pid: 999_999_999, startTime: 1 }));
      await writeFile(join(alive, 'owner.json'), JSON.stringify(currentOwner()));
      await age(10 * HOUR, join(alive, 'x.qcow2'), join(alive, 'owner.json'), alive);
      const probed: string[] = [];
      await prepareViewsDir(layout, async (p) => (probed.push(p), 'free'));
      expect((await readdir(layout.viewsRoot)).sort()).toEqual(['alive', 'me']);
      expect(probed).toEqual([]);
    });
  });
});
