// proto.md, NBD_CMD_BLOCK_STATUS: "The server SHOULD use different *status* values between
// consecutive descriptors where feasible". A backend may describe its export in pieces smaller
// than its runs of equal status (a file's extents, a bitmap's granules): the server joins equal
// neighbours into one descriptor with the default minimum block size (1) as it does with a larger
// one, so a client gets one descriptor per run, and REQ_ONE's one descriptor covers the whole run.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, NbdServer, type NbdBackend, type StatusDescriptor } from '../src/index.js';
import { BLOCK_STATUS, DONE, flaggedRequest, rawStructuredGo, readChunk } from './helpers/raw-nbd.js';
import { tempDir } from './helpers/peers.js';

let dir: { path: string; remove: () => Promise<void> } | undefined;
beforeAll(async () => {
  dir = await tempDir('nbd-merge-');
});
afterAll(async () => {
  await dir?.remove();
});

const PIECE = 50;
const DIRTY = 'qemu:dirty-bitmap:m';
/** base:allocation per 50-byte piece (0 data, 2 zero, 3 hole|zero), and the dirty bitmap per piece. */
const BASE = [0, 0, 0, 3, 3, 0, 0, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3];
const DIRTY_BITS = [1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0];
const SIZE = BASE.length * PIECE;

/** Describes every 50-byte piece on its own, equal neighbours never joined. */
const backend: NbdBackend = {
  size: SIZE,
  metaContexts: [DIRTY],
  read: async (_o, len) => [{ zero: len }],
  async blockStatus(context, offset, length) {
    const per = context === DIRTY ? DIRTY_BITS : BASE;
    const out: StatusDescriptor[] = [];
    for (let at = offset, end = offset + length; at < end; ) {
      const piece = Math.floor(at / PIECE);
      const to = Math.min((piece + 1) * PIECE, end);
      out.push({ length: to - at, flags: per[piece]! });
      at = to;
    }
    return out;
  },
};

async function serve(): Promise<{ server: NbdServer; path: string }> {
  const server = new NbdServer({ exports: [{ name: 'x', backend }] });
  const path = join(dir!.path, `s${Math.random().toString(36).slice(2)}.sock`);
  await server.listen({ path });
  return { server, path };
}

describe('NbdServer block status with the minimum block size 1', () => {
  it('sends one descriptor per run of equal status, not one per piece the backend described', async () => {
    const { server, path } = await serve();
    const client = await NbdClient.connect({ path, exportName: 'x', metaContexts: ['base:allocation', DIRTY] });
    try {
      expect(client.blockSizes.min).toBe(1);
      expect(await client.blockStatus('base:allocation', 0, SIZE)).toEqual([
        { offset: 0, length: 150, flags: 0 },
        { offset: 150, length: 100, flags: 3 },
        { offset: 250, length: 100, flags: 0 },
        { offset: 350, length: 150, flags: 2 },
        { offset: 500, length: 400, flags: 0 },
        { offset: 900, length: 100, flags: 3 },
      ]);
      expect(await client.blockStatus(DIRTY, 0, SIZE)).toEqual([
        { offset: 0, length: 100, flags: 1 },
        { offset: 100, length: 300, flags: 0 },
        { offset: 400, length: 200, flags: 1 },
        { offset: 600, length: 400, flags: 0 },
      ]);
      // Unaligned: the first and last pieces are partial, still joined with their neighbours.
      expect(await client.blockStatus('base:allocation', 510, 377)).toEqual([{ offset: 510, length: 377, flags: 0 }]);
    } finally {
      await client.disconnect();
      await server.close();
    }
  });

  it('with REQ_ONE, the one descriptor covers the run the request begins in, up to the request length', async () => {
    const { server, path } = await serve();
    const { raw, contexts } = await rawStructuredGo(path, 'x', ['base:allocation']);
    try {
      const status = async (offset: number, length: number): Promise<Array<[number, number]>> => {
        raw.write(flaggedRequest(7, 8, 1, offset, length));
        const c = await readChunk(raw);
        expect(c.type).toBe(BLOCK_STATUS);
        expect(c.flags & DONE).toBe(DONE);
        expect(c.body.readUInt32BE(0)).toBe(contexts.get('base:allocation'));
        const out: Array<[number, number]> = [];
        for (let i = 4; i < c.body.length; i += 8) out.push([c.body.readUInt32BE(i), c.body.readUInt32BE(i + 4)]);
        return out;
      };
      expect(await status(0, SIZE)).toEqual([[150, 0]]);
      expect(await status(500, 300)).toEqual([[300, 0]]);
      expect(await status(360, 200)).toEqual([[140, 2]]);
    } finally {
      raw.socket.destroy();
      await server.close();
    }
  });
});
