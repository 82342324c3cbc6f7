// OverlayFile.open of a damaged or truncated overlay: every field of the map (magic, format
// version, header JSON, size, block size, the bitmap's length and its padding bits) and the data
// file's length are checked against the files' real sizes. Each damage is CORRUPT naming the file,
// the files stay as they were, and the overlay can be opened again (no lock or open slot left
// behind). Without the checks such an overlay opened, and served the backup's bytes where the
// overlay held writes (a map cut short, a block size changed) or zeros (a data file cut short).
import { readFile, truncate, writeFile, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OverlayFile } from '../src/index.js';
import { tempDir } from './helpers/peers.js';

const BS = 4096;
/** 11 blocks, the last one short: a 2-byte bitmap whose last 5 bits are padding. */
const SIZE = 10 * BS + 100;
const HEADER = 4096;
const identity = { backupId: 'b1', size: SIZE };
const base = async (_offset: number, length: number): Promise<Buffer> => Buffer.alloc(length, 0x5a);

let dir: { path: string; remove: () => Promise<void> };
let n = 0;
beforeAll(async () => {
  dir = await tempDir('nbd-ovdmg-');
});
afterAll(async () => {
  await dir?.remove();
});

/** A closed overlay with blocks 0 and 9 written (0x11, 0x99): bitmap bytes 0b1 and 0b10. */
async function written(): Promise<string> {
  const path = join(dir.path, `o${++n}.img`);
  const o = await OverlayFile.open(path, identity, base, { blockSize: BS });
  await o.write(0, Buffer.alloc(BS, 0x11));
  await o.write(9 * BS, Buffer.alloc(BS, 0x99));
  await o.close();
  return path;
}

/** A map header as the overlay writes it: `magic`, one JSON line, spaces to 4 KiB. */
function header(json: string, magic = 'CAIRN-OVERLAY/1\n'): Buffer {
  const head = Buffer.alloc(HEADER, 0x20);
  head.write(magic + json + '\n');
  return head;
}

async function replaceHeader(path: string, head: Buffer): Promise<void> {
  const map = await readFile(`${path}.map`);
  head.copy(map, 0);
  await writeFile(`${path}.map`, map);
}

/** Opens `path` expecting `code`; checks the files are unchanged and nothing stays held. */
async function expectRefused(path: string, code: string, message: RegExp): Promise<void> {
  const before = [await readFile(path), await readFile(`${path}.map`)];
  const err = await OverlayFile.open(path, identity, base).then(
    async (o) => {
      await o.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  expect(err).toMatchObject({ code, message: expect.stringMatching(message) });
  expect([await readFile(path), await readFile(`${path}.map`)]).toEqual(before);
  // Nothing held: the same open fails the same way, not CONFLICT (open slot or lock left behind).
  await expect(OverlayFile.open(path, identity, base)).rejects.toMatchObject({ code });
}

const mapNamed = (path: string): RegExp => new RegExp(`${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.map `);

describe('OverlayFile.open of a damaged overlay', () => {
  it('an intact overlay reopens with both blocks (the fixture the damage starts from)', async () => {
    const path = await written();
    const o = await OverlayFile.open(path, identity, base);
    expect(o.written(0, SIZE)).toEqual([
      { offset: 0, length: BS },
      { offset: 9 * BS, length: BS },
    ]);
    expect(o.blocksWritten).toBe(2);
    expect((await o.read(9 * BS, 4)).equals(Buffer.alloc(4, 0x99))).toBe(true);
    await o.close();
  });

  it('a map cut short (bitmap byte of block 9 gone) is CORRUPT "truncated", not block 9 read from the backup', async () => {
    const path = await written();
    await truncate(`${path}.map`, HEADER + 1);
    await expectRefused(path, 'CORRUPT', /is 4097 bytes, but its header .* makes it 4098: truncated/);
    await expectRefused(path, 'CORRUPT', mapNamed(path));
  });

  it('a map cut at its header is CORRUPT', async () => {
    const path = await written();
    await truncate(`${path}.map`, HEADER);
    await expectRefused(path, 'CORRUPT', mapNamed(path));
  });

  it('a map with bytes after its bitmap is CORRUPT', async () => {
    const path = await written();
    await appendFile(`${path}.map`, Buffer.alloc(3));
    await expectRefused(path, 'CORRUPT', /is 4101 bytes, but .* makes it 4098: damaged/);
  });

  it('a block size changed to another valid one (8 KiB) is CORRUPT: the bitmap length no longer fits it', async () => {
    const path = await written();
    await replaceHeader(path, header(JSON.stringify({ ...identity, blockSize: 2 * BS })));
    await expectRefused(path, 'CORRUPT', /in blocks of 8192\) makes it 4097/);
  });

  it('a block size of 2^33 (a power of two past 16 MiB, which a 32-bit bit test let through) is CORRUPT', async () => {
    const path = await written();
    await replaceHeader(path, header(JSON.stringify({ ...identity, blockSize: 2 ** 33 })));
    await expectRefused(path, 'CORRUPT', /bad block size in its header: "8589934592"/);
  });

  it('a header whose JSON is null, an array or a number is CORRUPT (not a TypeError)', async () => {
    for (const json of ['null', '[1]', '7']) {
      const path = await written();
      await replaceHeader(path, header(json));
      await expectRefused(path, 'CORRUPT', /unreadable header \(not a JSON object\)/);
    }
  });

  it('a negative or fractional size, a missing backup id, a header with no newline are CORRUPT', async () => {
    const cases: Array<[Buffer, RegExp]> = [
      [header(JSON.stringify({ ...identity, size: -1, blockSize: BS })), /bad size in its header: "-1"/],
      [header(JSON.stringify({ ...identity, size: 1.5, blockSize: BS })), /bad size in its header: "1.5"/],
      [header(JSON.stringify({ size: SIZE, blockSize: BS })), /no backup id/],
      [Buffer.alloc(HEADER, 0x20).fill('CAIRN-OVERLAY/1\n{', 0, 17), /unreadable header/],
    ];
    for (const [head, message] of cases) {
      const path = await written();
      await replaceHeader(path, head);
      await expectRefused(path, 'CORRUPT', message);
    }
  });

  it('another format version is CORRUPT naming it', async () => {
    const path = await written();
    await replaceHeader(path, header(JSON.stringify({ ...identity, blockSize: BS }), 'CAIRN-OVERLAY/2\n'));
    await expectRefused(path, 'CORRUPT', /has overlay map format "2", not 1/);
  });

  it('bits set past the last block are CORRUPT (they would count as written blocks)', async () => {
    const path = await written();
    const map = await readFile(`${path}.map`);
    map[HEADER + 1] |= 0x80; // block 15 of 11
    await writeFile(`${path}.map`, map);
    await expectRefused(path, 'CORRUPT', /bits set past its last block \(11\)/);
  });

  it('a data file cut short is CORRUPT naming it, not block 9 read as zeros', async () => {
    const path = await written();
    await truncate(path, 9 * BS);
    await expectRefused(path, 'CORRUPT', new RegExp(`${path.replace(/\./g, '\\.')} is 36864 bytes, not the backup's ${SIZE}`));
  });

  it("a map of another backup with a 4000-character id is CONFLICT quoting the id cut", async () => {
    const path = await written();
    await replaceHeader(path, header(JSON.stringify({ backupId: 'x'.repeat(4000), size: SIZE, blockSize: BS })));
    const err = (await OverlayFile.open(path, identity, base).catch((e: unknown) => e)) as Error;
    expect(err).toMatchObject({ code: 'CONFLICT', message: expect.stringContaining(`belongs to backup "${'x'.repeat(80)}"… (4000 characters) (${SIZE} bytes), not b1`) });
    expect(err.message.length).toBeLessThan(400);
  });
});
