// proto.md, NBD_CMD_BLOCK_STATUS: the server "MUST use descriptor lengths that are an integer
// multiple of any advertised minimum block size". NbdServer with `minBlockSize` 4096 over a
// backend that describes 512-byte sectors must fold them onto whole blocks, reporting for a block
// whose sectors differ the state that is safe: for `base:allocation` a flag only when every sector
// has it (never a hole or zeros where there is data), for a dirty bitmap dirty when any sector is.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, NbdServer, type NbdBackend, type StatusDescriptor } from '../src/index.js';
import { BLOCK_STATUS, DONE, RawSocket, u16, u32, u64 } from './helpers/raw-nbd.js';
import { tempDir } from './helpers/peers.js';

let dir: { path: string; remove: () => Promise<void> } | undefined;
let sockets = 0;
beforeAll(async () => {
  dir = await tempDir('nbd-smb-');
});
afterAll(async () => {
  await dir?.remove();
});

const MIN = 4096;
const SECTOR = 512;
const PER = MIN / SECTOR;
const DIRTY = 'qemu:dirty-bitmap:c1';

/** Per-sector states of 8 blocks: base:allocation (0 data, 1 hole, 2 zero, 3 hole|zero) and dirty (1). */
function states(): { base: number[]; dirty: number[] } {
  const base: number[] = [];
  const dirty: number[] = [];
  const block = (b: number[], d: number[]): void => {
    base.push(...b);
    dirty.push(...d);
  };
  const all = (v: number): number[] => new Array<number>(PER).fill(v);
  const one = (v: number, at: number, rest: number): number[] => all(rest).map((x, i) => (i === at ? v : x));
  block(all(0), all(0)); // 0: data, clean
  block(all(3), one(1, 3, 0)); // 1: hole|zero; one dirty sector
  block(one(0, 0, 3), all(0)); // 2: one data sector among holes → data
  block([2, 2, 3, 3, 2, 3, 3, 3], all(0)); // 3: zero and hole|zero → zero (not hole)
  block([3, 1, 3, 3, 3, 3, 3, 3], all(0)); // 4: hole (not zero) among hole|zero → hole
  block(all(3), all(1)); // 5: hole|zero, dirty
  block(all(3), all(0)); // 6: hole|zero
  block(one(0, PER - 1, 3), all(0)); // 7: last sector data → data
  return { base, dirty };
}

/** Describes sectors as they are, runs of equal states merged, never aligned to MIN. */
function sectorBackend(size: number): NbdBackend {
  const s = states();
  return {
    size,
    metaContexts: [DIRTY],
    read: async (_o, len) => [{ zero: len }],
    async blockStatus(context, offset, length) {
      const per = context === DIRTY ? s.dirty : s.base;
      const out: StatusDescriptor[] = [];
      for (let at = offset, end = offset + length; at < end; ) {
        const sector = Math.floor(at / SECTOR);
        const to = Math.min((sector + 1) * SECTOR, end);
        const flags = per[sector] ?? 0;
        const last = out[out.length - 1];
        if (last && last.flags === flags) last.length += to - at;
        else out.push({ length: to - at, flags });
        at = to;
      }
      return out;
    },
  };
}

async function serve(size: number): Promise<{ server: NbdServer; path: string }> {
  const server = new NbdServer({ exports: [{ name: 'x', backend: sectorBackend(size) }], minBlockSize: MIN, preferredBlockSize: MIN });
  const path = join(dir!.path, `s${++sockets}.sock`);
  await server.listen({ path });
  return { server, path };
}


/** A hand-driven client: structured replies, `base:allocation`, NBD_OPT_GO asking NBD_INFO_BLOCK_SIZE. */
async function rawStructured(path: string): Promise<{ raw: RawSocket; contextId: number; min: number }> {
  const raw = await RawSocket.connect(path);
  await raw.read(18);
  raw.write(u32(3));
  const option = async (opt: number, data: Buffer): Promise<Array<{ type: number; body: Buffer }>> => {
    raw.write(Buffer.concat([Buffer.from('IHAVEOPT'), u32(opt), u32(data.length), data]));
    const replies: Array<{ type: number; body: Buffer }> = [];
    for (;;) {
      const head = await raw.read(20);
      const type = head.readUInt32BE(12);
      replies.push({ type, body: await raw.read(head.readUInt32BE(16)) });
      if (type === 1 || type >= 0x80000000) return replies;
    }
  };
  expect((await option(8, Buffer.alloc(0))).map((r) => r.type)).toEqual([1]);
  const name = Buffer.from('x');
  const query = Buffer.from('base:allocation');
  const meta = await option(10, Buffer.concat([u32(name.length), name, u32(1), u32(query.length), query]));
  const ctx = meta.find((r) => r.type === 4)!;
  const go = await option(7, Buffer.concat([u32(name.length), name, u16(1), u16(3)]));
  const bs = go.find((r) => r.type === 3 && r.body.readUInt16BE(0) === 3)!;
  return { raw, contextId: ctx.body.readUInt32BE(0), min: bs.body.readUInt32BE(2) };
}

/** Sends one BLOCK_STATUS and returns the descriptors of its single chunk as [length, flags]. */
async function rawStatus(raw: RawSocket, flags: number, offset: number, length: number): Promise<Array<[number, number]>> {
  raw.write(Buffer.concat([u32(0x25609513), u16(flags), u16(7), u64(1), u64(offset), u32(length)]));
  const head = await raw.read(20);
  expect(head.readUInt32BE(0)).toBe(0x668e33ef);
  expect(head.readUInt16BE(6)).toBe(BLOCK_STATUS);
  expect(head.readUInt16BE(4) & DONE).toBe(DONE);
  const body = await raw.read(head.readUInt32BE(16));
  const out: Array<[number, number]> = [];
  for (let i = 4; i < body.length; i += 8) out.push([body.readUInt32BE(i), body.readUInt32BE(i + 4)]);
  return out;
}

describe('NbdServer block status with a minimum block size', () => {
  it('describes whole minimum blocks only, with the safe state of a block whose sectors differ', async () => {
    const { server, path } = await serve(8 * MIN);
    const client = await NbdClient.connect({ path, exportName: 'x', metaContexts: ['base:allocation', DIRTY] });
    try {
      expect(client.blockSizes.min).toBe(MIN);
      const base = await client.blockStatus('base:allocation', 0, 8 * MIN);
      const dirty = await client.blockStatus(DIRTY, 0, 8 * MIN);
      for (const e of [...base, ...dirty]) {
        expect(e.offset % MIN, JSON.stringify(e)).toBe(0);
        expect(e.length % MIN, JSON.stringify(e)).toBe(0);
      }
      expect(base).toEqual([
        { offset: 0, length: MIN, flags: 0 },
        { offset: MIN, length: MIN, flags: 3 },
        { offset: 2 * MIN, length: MIN, flags: 0 },
        { offset: 3 * MIN, length: MIN, flags: 2 },
        { offset: 4 * MIN, length: MIN, flags: 1 },
        { offset: 5 * MIN, length: 2 * MIN, flags: 3 },
        { offset: 7 * MIN, length: MIN, flags: 0 },
      ]);
      expect(dirty).toEqual([
        { offset: 0, length: MIN, flags: 0 },
        { offset: MIN, length: MIN, flags: 1 },
        { offset: 2 * MIN, length: 3 * MIN, flags: 0 },
        { offset: 5 * MIN, length: MIN, flags: 1 },
        { offset: 6 * MIN, length: 2 * MIN, flags: 0 },
      ]);
      // One block on its own: the one data sector among holes makes it data.
      expect(await client.blockStatus('base:allocation', 2 * MIN, MIN)).toEqual([{ offset: 2 * MIN, length: MIN, flags: 0 }]);
    } finally {
      await client.disconnect();
      await server.close();
    }
  });

  it('refuses an export whose size is not a multiple of the minimum block size', () => {
    // proto.md: the size SHOULD be a multiple, "since otherwise, the client would be unable to access the final few bytes".
    const make = (size: number) => () => new NbdServer({ exports: [{ name: 'x', backend: sectorBackend(size) }], minBlockSize: MIN, preferredBlockSize: MIN });
    expect(make(8 * MIN + 1000)).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', details: { option: 'minBlockSize', export: 'x' } }));
    expect(make(8 * MIN + 512)).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
    expect(make(8 * MIN)).not.toThrow();
  });

  it('rounds an unaligned request out to whole blocks, never past the end, and honours REQ_ONE', async () => {
    const size = 8 * MIN;
    const { server, path } = await serve(size);
    const { raw, min } = await rawStructured(path);
    try {
      expect(min).toBe(MIN);
      // 100 bytes of a block: the whole block (proto.md: the final descriptor MAY extend beyond the request).
      expect(await rawStatus(raw, 0, MIN, 100)).toEqual([[MIN, 3]]);
      expect(await rawStatus(raw, 0, 2 * MIN, MIN + 1)).toEqual([[MIN, 0], [MIN, 2]]);
      // REQ_ONE: one descriptor, no longer than the request, still whole blocks.
      expect(await rawStatus(raw, 8, 0, 3 * MIN)).toEqual([[MIN, 0]]);
      expect(await rawStatus(raw, 8, 5 * MIN, 2 * MIN + 100)).toEqual([[2 * MIN, 3]]);
      // The last block, asked for with more than its length: never described past the end.
      expect(await rawStatus(raw, 0, 7 * MIN, MIN / 2)).toEqual([[MIN, 0]]);
    } finally {
      raw.socket.destroy();
      await server.close();
    }
  });
});
