import { mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { PosixObjectStore } from '../src/index.js';
import { newTempName } from '../src/key-layout.js';
import { listKeys } from './helpers.js';

// An operator may move a prefix (packs/) or a shard directory to another disk and leave a symbolic
// link in its place. Reads follow such links (a key's path is opened through them), so listing
// and sweepTemp must follow them too: a pack that get reads but list misses is one GC takes for lost.

const id = (shard: string): string => shard + 'e1'.repeat(31);

let scratch: string;
let store: PosixObjectStore;
beforeEach(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'cairn-posix-links-'));
  store = await PosixObjectStore.open({ directory: join(scratch, 'repo'), reserveBytes: 0 });
});
afterEach(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** A directory outside the repository (another disk, say) holding `files`, and a link `at` to it. */
async function linkedDir(name: string, at: string, files: Record<string, string>): Promise<string> {
  const target = join(scratch, name);
  await mkdir(target, { recursive: true });
  for (const [file, body] of Object.entries(files)) await writeFile(join(target, file), body);
  await symlink(target, join(store.directory, at));
  return target;
}

it('list follows a symbolic link to a shard directory and to a top-level prefix, finding every object get reads there', async () => {
  await store.put(`data/${id('aa')}`, Buffer.from('local'));
  await linkedDir('moved-shard', 'data/ab', { [id('ab')]: 'moved' });
  await linkedDir('moved-packs', 'packs', { p1: 'pack 1', p2: 'pack 2' });
  expect((await store.get(`data/${id('ab')}`)).toString()).toBe('moved');
  expect((await store.get('packs/p1')).toString()).toBe('pack 1');

  const all = [`data/${id('aa')}`, `data/${id('ab')}`, 'packs/p1', 'packs/p2'];
  expect(await listKeys(store, '')).toEqual(all);
  expect(await listKeys(store, 'data/')).toEqual(all.slice(0, 2));
  expect(await listKeys(store, 'data/ab')).toEqual([`data/${id('ab')}`]);
  expect(await listKeys(store, 'packs/')).toEqual(['packs/p1', 'packs/p2']);
  expect(await listKeys(store, 'pa')).toEqual(['packs/p1', 'packs/p2']);

  // Writes through the link land beside the others, and list sees them too.
  await store.put('packs/p3', Buffer.from('pack 3'));
  expect(await listKeys(store, 'packs/')).toEqual(['packs/p1', 'packs/p2', 'packs/p3']);
});

it('a link back to a directory the walk is in (a loop) is not followed, and neither is a link to a file or to nothing', async () => {
  await store.put('index/a', Buffer.from('a'));
  await store.put(`data/${id('cd')}`, Buffer.from('c'));
  await symlink(store.directory, join(store.directory, 'index', 'up')); // to the root
  await symlink(join(store.directory, 'data', 'cd'), join(store.directory, 'data', 'cd', 'self')); // to its own directory
  await symlink('loop', join(store.directory, 'loop')); // to itself: ELOOP
  await symlink(join(scratch, 'nowhere'), join(store.directory, 'gone')); // dangling
  await writeFile(join(scratch, 'plain'), 'no object');
  await symlink(join(scratch, 'plain'), join(store.directory, 'index', 'file-link')); // objects are regular files
  // Two links that lead into each other: x/to-y → y, y/to-x → x.
  await mkdir(join(store.directory, 'x'));
  await mkdir(join(store.directory, 'y'));
  await store.put('x/o', Buffer.from('x'));
  await symlink(join(store.directory, 'y'), join(store.directory, 'x', 'to-y'));
  await symlink(join(store.directory, 'x'), join(store.directory, 'y', 'to-x'));

  // y reached through x/to-y: its to-x leads back to x, which the walk is in. y itself is not.
  expect(await listKeys(store, '')).toEqual([`data/${id('cd')}`, 'index/a', 'x/o', 'y/to-x/o']);
  expect(await store.sweepTemp(0)).toBe(0);
});

it('sweepTemp removes an old temporary file inside a linked directory and leaves its objects', async () => {
  const target = await linkedDir('moved-packs', 'packs', { p1: 'pack 1' });
  const temp = join(target, newTempName());
  await writeFile(temp, 'a dead writer’s');
  const old = new Date(Date.now() - 2 * 60 * 60 * 1000);
  await utimes(temp, old, old);
  expect(await store.sweepTemp()).toBe(1);
  expect(await listKeys(store, 'packs/')).toEqual(['packs/p1']);
});
