import { mkdir, mkdtemp, readdir, rm as realRm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { currentOwner } from '@cairn/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Layout } from '../src/layout.js';
import { prepareViewsDir } from '../src/views-dir.js';

/** Paths under which `rm` fails as for a directory of another user (EACCES). */
const refused: string[] = [];
vi.mock('node:fs/promises', async (original) => {
  const actual = await original<typeof import('node:fs/promises')>();
  return {
    ...actual,
    rm: async (path: string, options?: Parameters<typeof actual.rm>[1]) => {
      if (refused.some((p) => String(path).startsWith(p))) throw Object.assign(new Error(`EACCES: permission denied, rm '${path}'`), { code: 'EACCES' });
      return actual.rm(path, options);
    },
  };
});

afterEach(() => void refused.splice(0));

describe("prepareViewsDir and a dead instance's directory it cannot remove", () => {
  it('readies this instance anyway, keeps the dead owner named, and removes the directory at a later start', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'cairn-views-'));
    try {
      const layout = new Layout(directory, 'me');
      const dead = join(layout.viewsRoot, 'dead');
      await mkdir(dead, { recursive: true });
      await writeFile(join(dead, 'owner.json'), JSON.stringify({ ...currentOwner(), pid: 999_999_999, startTime: 1 }));
      await writeFile(join(dead, 'x.qcow2'), 'overlay');
      refused.push(join(dead, 'x.qcow2'), dead);
      await prepareViewsDir(layout);
      expect((await readdir(layout.viewsDir)).sort()).toEqual(['owner.json']);
      expect((await readdir(dead)).sort()).toEqual(['owner.json', 'x.qcow2']);
      refused.splice(0);
      await prepareViewsDir(layout);
      expect((await readdir(layout.viewsRoot)).sort()).toEqual(['me']);
    } finally {
      await realRm(directory, { recursive: true, force: true });
    }
  });
});
