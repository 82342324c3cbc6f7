import { createHash } from 'node:crypto';
import { createWriteStream, readdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readArchive } from '../src/archive/reader.js';
import { cairn, cairnJson, listTree, MiB, removeDir, tempDir, writeRawImage, jsonError } from './helpers.js';

interface Entry {
  name: string;
  data: Buffer;
  type?: 'file' | 'symlink';
  size?: number;
}

/** Reads every entry of a tar (test-side, with tar-stream). */
async function readEntries(file: string): Promise<Entry[]> {
  const extract = tar.extract();
  const out: Entry[] = [];
  const done = (async () => {
    for await (const e of extract) {
      const parts: Buffer[] = [];
      for await (const p of e as unknown as AsyncIterable<Buffer>) parts.push(p);
      out.push({ name: e.header.name, data: Buffer.concat(parts) });
    }
  })();
  extract.end(await readFile(file));
  await done;
  return out;
}

/** Writes entries as a tar; `size` may lie about an entry's length in its header. */
async function writeEntries(file: string, entries: Entry[]): Promise<void> {
  const pack = tar.pack();
  const done = pipeline(pack, createWriteStream(file));
  for (const e of entries) {
    if (e.type === 'symlink') pack.entry({ name: e.name, type: 'symlink', linkname: '/etc/passwd' });
    else await new Promise<void>((r, j) => pack.entry({ name: e.name, size: e.data.length }, e.data, (err) => (err ? j(err) : r())));
  }
  pack.finalize();
  await done;
}

/** The entries with the manifest's JSON changed by `edit` (SHA256SUMS left as it was, unless resummed). */
const editManifest = (entries: Entry[], edit: (m: any) => void): Entry[] => {
  const m = JSON.parse(entries[0]!.data.toString());
  edit(m);
  return [{ ...entries[0]!, data: Buffer.from(JSON.stringify(m, null, 2)) }, ...entries.slice(1)];
};

/** A copy of `b` with the byte at `at` inverted: always a change, whatever the byte was (setting it to a constant is not). */
const flipped = (b: Buffer, at: number): Buffer => {
  const copy = Buffer.from(b);
  copy[at]! ^= 0xff;
  return copy;
};

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const resum = (entries: Entry[]) => {
  const body = entries.filter((e) => e.name !== 'SHA256SUMS').map((e) => `${sha(e.data)}  ${e.name}`).join('\n');
  return [...entries.filter((e) => e.name !== 'SHA256SUMS'), { name: 'SHA256SUMS', data: Buffer.from(`${body}\n`) }];
};

describe('cairn backup export/import (archives)', () => {
  let cwd: string;
  let other: string;
  let data: Buffer;
  let backup: any;
  let archive: string;
  let entries: Entry[];
  const run = (args: string[]) => cairn(args, { cwd });

  beforeAll(async () => {
    cwd = await tempDir();
    other = await tempDir();
    data = await writeRawImage(join(cwd, 'a.raw'), 3 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
    backup = await cairnJson(['backup', 'create', 'a', '--name', 'archived'], { cwd });
    archive = join(cwd, 'b.tar');
  });
  afterAll(async () => {
    await removeDir(cwd);
    await removeDir(other);
  });

  it('backup export --archive writes manifest, data entries and SHA256SUMS', async () => {
    const r = await cairnJson(['backup', 'export', backup.id, '--archive', archive], { cwd });
    expect(r).toMatchObject({ backupId: backup.id, size: 3 * MiB, file: archive });
    entries = await readEntries(archive);
    expect(entries[0]!.name).toBe('cairn-archive.json');
    expect(entries.at(-1)!.name).toBe('SHA256SUMS');
    const manifest = JSON.parse(entries[0]!.data.toString());
    expect(manifest).toMatchObject({ format: 'cairn-archive/1', size: 3 * MiB, record: { id: backup.id, name: 'archived' } });
    expect(entries.filter((e) => e.name.startsWith('data/'))).toHaveLength(manifest.chunks.length);
    expect((await run(['backup', 'export', backup.id, '--archive', archive])).code).toBe(4);
  });

  it('backup import into another deployment registers the backup, which restores byte-exact', async () => {
    const imported = await cairnJson(['backup', 'import', archive], { cwd: other });
    expect(imported).toMatchObject({ id: backup.id, name: 'archived', status: 'available', incremental: false, size: 3 * MiB });
    expect(await cairnJson(['backup', 'verify', backup.id], { cwd: other })).toMatchObject({ problems: [] });
    const restored = await cairnJson(['backup', 'restore', backup.id, '--new'], { cwd: other });
    await cairnJson(['volume', 'export', restored.volume.id, join(other, 'r.raw')], { cwd: other });
    expect((await readFile(join(other, 'r.raw'))).equals(data)).toBe(true);
  });

  it('backup import of an id already present fails with ALREADY_EXISTS (exit 4)', async () => {
    const r = await run(['backup', 'import', archive, '--json']);
    expect(r.code).toBe(4);
    expect(jsonError(r).code).toBe('ALREADY_EXISTS');
  });

  it('backup import of a damaged archive of an id already present is ALREADY_EXISTS (exit 4): the id is claimed before the data is read', async () => {
    const bad = join(cwd, 'bad-present.tar');
    await writeEntries(bad, entries.map((e) => (e.name.startsWith('data/') ? { ...e, data: flipped(e.data, 100) } : e)));
    const before = await listTree(other);
    const r = await cairn(['backup', 'import', bad, '--json'], { cwd: other });
    expect(r.code, r.stderr).toBe(4);
    expect(jsonError(r).code).toBe('ALREADY_EXISTS');
    expect(await listTree(other)).toEqual(before);
  });

  it('backup delete in the other deployment frees the id for the refusals below', async () => {
    await cairnJson(['backup', 'delete', backup.id], { cwd: other });
    expect((await cairn(['backup', 'show', backup.id, '--json'], { cwd: other })).code).toBe(3);
  });

  const refused: [string, () => Entry[], number, string][] = [
    ['a flipped byte in a data entry', () => entries.map((e) => (e.name.startsWith('data/') ? { ...e, data: flipped(e.data, 100) } : e)), 5, 'CORRUPT'],
    ['an entry escaping the target (../)', () => resum([entries[0]!, { name: '../escape.bin', data: Buffer.from('x') }, ...entries.slice(1)]), 2, 'INVALID_INPUT'],
    ['an absolute entry name', () => resum([entries[0]!, { name: '/tmp/abs.bin', data: Buffer.from('x') }, ...entries.slice(1)]), 2, 'INVALID_INPUT'],
    ['a duplicated entry name', () => resum([entries[0]!, entries[1]!, entries[1]!, ...entries.slice(2)]), 2, 'INVALID_INPUT'],
    ['a symbolic link entry', () => [entries[0]!, { name: 'data/link', data: Buffer.alloc(0), type: 'symlink' }, ...entries.slice(1)], 2, 'INVALID_INPUT'],
    ['a data entry of the wrong size', () => resum(entries.map((e) => (e.name.startsWith('data/') ? { ...e, data: e.data.subarray(0, e.data.length - 512) } : e))), 5, 'CORRUPT'],
    ['a missing data entry', () => resum(entries.filter((e, i) => !(e.name.startsWith('data/') && i === 1))), 5, 'CORRUPT'],
    ['no manifest first', () => entries.slice(1), 2, 'INVALID_INPUT'],
    // One byte of the manifest flipped (a digest's 'a'..'f' turns 'q'..'v'): the sums do not vouch for it.
    ['a flipped byte in the manifest that breaks its schema', () => editManifest(entries, (m) => (m.chunks[0].sha256 = String.fromCharCode(m.chunks[0].sha256.charCodeAt(0) ^ 0x10) + m.chunks[0].sha256.slice(1))), 5, 'CORRUPT'],
    ['an intact manifest this version does not take', () => resum(editManifest(entries, (m) => (m.chunks[0].sha256 = 'q'.repeat(64)))), 2, 'INVALID_INPUT'],
    ['another version of the format', () => editManifest(entries, (m) => (m.format = 'cairn-archive/2')), 2, 'INVALID_INPUT'],
  ];

  for (const [what, make, code, errorCode] of refused) {
    it(`backup import of an archive with ${what} is refused with ${errorCode} and writes nothing`, async () => {
      const bad = join(cwd, 'bad.tar');
      const list = make();
      await writeEntries(bad, list);
      const before = await listTree(other);
      const r = await cairn(['backup', 'import', bad, '--json'], { cwd: other });
      expect(r.code, r.stderr).toBe(code);
      expect(jsonError(r).code).toBe(errorCode);
      expect(await listTree(other)).toEqual(before);
    });
  }

  it('backup import of a file that is not a tar (the archive gzipped, a qcow2 image) is INVALID_INPUT (exit 2) and writes nothing', async () => {
    const gz = join(cwd, 'b.tar.gz');
    await writeFile(gz, gzipSync(await readFile(archive)));
    const qcow2 = join(cwd, 'q.qcow2');
    await writeFile(qcow2, Buffer.concat([Buffer.from('QFI\xfb', 'latin1'), Buffer.alloc(64 * 1024 - 4)]));
    const before = await listTree(other);
    for (const file of [gz, qcow2]) {
      const r = await cairn(['backup', 'import', file, '--json'], { cwd: other });
      expect(r.code, r.stderr).toBe(2);
      expect(jsonError(r).code).toBe('INVALID_INPUT');
    }
    expect(await listTree(other)).toEqual(before);
  });

  it('readArchive of a damaged archive rejects with CORRUPT and leaves no file of its staging open', async () => {
    const bad = join(cwd, 'bad-fds.tar');
    await writeEntries(bad, resum(entries.map((e, i) => (e.name.startsWith('data/') && i === entries.length - 2 ? { ...e, data: flipped(e.data, 100) } : e))));
    const open = () => readdirSync('/proc/self/fd').length;
    const before = open();
    await expect(readArchive(bad)).rejects.toMatchObject({ code: 'CORRUPT' });
    expect(open()).toBe(before);
  });

  it('backup import of a truncated archive is CORRUPT (exit 5) and writes nothing', async () => {
    const whole = await readFile(archive);
    const bad = join(cwd, 'truncated.tar');
    await writeFile(bad, whole.subarray(0, Math.floor(whole.length / 2)));
    const before = await listTree(other);
    const r = await cairn(['backup', 'import', bad, '--json'], { cwd: other });
    expect(r.code).toBe(5);
    expect(await listTree(other)).toEqual(before);
  });
});
