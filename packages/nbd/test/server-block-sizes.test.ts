// NbdServer refuses block sizes proto.md forbids ("Block size constraints"): the minimum "MUST be
// a power of 2, MUST NOT be larger than 2^16 (65,536)"; the preferred "MUST be a power of 2 at
// least as large as the maximum of the minimum block size and 2^9 (512)"; the maximum "MUST be
// either an integer multiple of the minimum block size or the value 0xffffffff" (this server caps
// it at 32 MiB). Valid ones are advertised as given (NBD_INFO_BLOCK_SIZE, raw socket).
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdServer, type NbdBackend } from '../src/index.js';
import { tempDir } from './helpers/peers.js';
import { RawSocket, u16, u32 } from './helpers/raw-nbd.js';

const MiB = 1024 * 1024;
const backend: NbdBackend = { size: MiB, read: async (o, len) => Buffer.alloc(len) };
const exports = [{ name: 'x', backend }];

let dir: { path: string; remove: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('nbd-bs-');
});
afterAll(async () => {
  await dir?.remove();
});

describe('NbdServer block size options', () => {
  const refused: Array<[string, { minBlockSize?: number; preferredBlockSize?: number; maxPayload?: number }, string]> = [
    ['minimum not a power of 2', { minBlockSize: 3, preferredBlockSize: 4096, maxPayload: 3 * 4096 }, 'minBlockSize'],
    ['minimum above 64 KiB', { minBlockSize: 128 * 1024, preferredBlockSize: 128 * 1024, maxPayload: MiB }, 'minBlockSize'],
    ['minimum 0', { minBlockSize: 0 }, 'minBlockSize'],
    ['minimum not whole', { minBlockSize: 1.5 }, 'minBlockSize'],
    ['preferred not a power of 2', { preferredBlockSize: 3000 }, 'preferredBlockSize'],
    ['preferred below 512', { minBlockSize: 1, preferredBlockSize: 256 }, 'preferredBlockSize'],
    ['preferred below the minimum', { minBlockSize: 8192, preferredBlockSize: 4096 }, 'preferredBlockSize'],
    ['maximum not a multiple of the minimum', { minBlockSize: 4096, preferredBlockSize: 4096, maxPayload: MiB + 512 }, 'maxPayload'],
    ['maximum below the preferred size', { preferredBlockSize: 8192, maxPayload: 4096 }, 'maxPayload'],
    ['maximum above 32 MiB', { maxPayload: 32 * MiB + 4096 }, 'maxPayload'],
  ];
  for (const [why, sizes, option] of refused) {
    it(`refuses ${why} with INVALID_INPUT naming ${option}`, () => {
      let err: unknown;
      try {
        new NbdServer({ exports, ...sizes });
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'INVALID_INPUT', details: { option } });
      expect((err as Error).message).toContain(option);
    });
  }

  it('advertises valid sizes as given, e.g. min 64 KiB, preferred 64 KiB, max 1 MiB + 64 KiB (not a power of 2)', async () => {
    const server = new NbdServer({ exports, minBlockSize: 64 * 1024, preferredBlockSize: 64 * 1024, maxPayload: MiB + 64 * 1024 });
    const path = join(dir.path, 'bs.sock');
    await server.listen({ path });
    try {
      const raw = await RawSocket.connect(path);
      await raw.read(18);
      raw.write(u32(3));
      const name = Buffer.from('x');
      const data = Buffer.concat([u32(name.length), name, u16(1), u16(3)]); // NBD_OPT_INFO asking NBD_INFO_BLOCK_SIZE
      raw.write(Buffer.concat([Buffer.from('IHAVEOPT'), u32(6), u32(data.length), data]));
      let sizes: number[] | undefined;
      for (;;) {
        const head = await raw.read(20);
        const type = head.readUInt32BE(12);
        const body = await raw.read(head.readUInt32BE(16));
        if (type === 3 && body.readUInt16BE(0) === 3) sizes = [body.readUInt32BE(2), body.readUInt32BE(6), body.readUInt32BE(10)];
        if (type === 1 || type >= 0x80000000) break;
      }
      expect(sizes).toEqual([64 * 1024, 64 * 1024, MiB + 64 * 1024]);
      raw.socket.destroy();
    } finally {
      await server.close();
    }
  });
});
