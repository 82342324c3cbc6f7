// proto.md, "Block size constraints": the minimum block size "MUST be a power of 2, MUST NOT be
// larger than 2^16"; the preferred "MUST be a power of 2 at least as large as the maximum of the
// minimum block size and 2^9 (512)"; the maximum "MUST be either an integer multiple of the
// minimum block size or the value 0xffffffff for no inherent limit, MUST be at least as large as
// the smaller of the preferred block size or export size". NBD_INFO_BLOCK_SIZE's "*length* MUST be
// 14", NBD_INFO_EXPORT's "MUST be 12". A client that asked for the sizes with NBD_OPT_GO "MUST
// abide by" them, which it cannot with sizes that break the rules: NbdClient treats them as the
// server breaking a MUST (CORRUPT, hard disconnect: no further option, not even NBD_OPT_ABORT).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { RawSocket, serveOptions, u16, u32, u64 } from './helpers/raw-nbd.js';
import { ScriptedServers } from './helpers/scripted-servers.js';

const scripted = new ScriptedServers('nbd-bsr-');

beforeAll(() => scripted.open());
afterAll(() => scripted.close());

const MiB = 1024 * 1024;
const INFO_EXPORT = 0;
const INFO_BLOCK_SIZE = 3;

/**
 * A server that answers NBD_OPT_GO with NBD_INFO_BLOCK_SIZE `infoBody` (then, or first when
 * `exportFirst` is false, NBD_INFO_EXPORT for `size` bytes) and NBD_REP_ACK, every other option
 * with NBD_REP_ERR_UNSUP; then serves simple-reply READs of zeroes. Records the options it got and
 * whether the client hung up.
 */
async function server(size: number, blockSizeInfo: Buffer, exportInfo = Buffer.concat([u16(INFO_EXPORT), u64(size), u16(1)]), exportFirst = true): Promise<{ path: string; options: number[]; closed: Promise<void> }> {
  const options: number[] = [];
  let closed!: Promise<void>;
  let markClosed!: () => void;
  closed = new Promise((r) => (markClosed = r));
  const srv = net.createServer((s) => {
    scripted.track(s);
    s.on('error', () => undefined);
    s.once('close', () => markClosed());
    const raw = new RawSocket(s);
    void (async () => {
      await serveOptions(s, raw, ({ opt, reply }) => {
        options.push(opt);
        if (opt !== 7) {
          reply(0x80000001);
          return false;
        }
        if (exportFirst) reply(3, exportInfo);
        reply(3, blockSizeInfo);
        if (!exportFirst) reply(3, exportInfo);
        reply(1);
        return true;
      });
      for (;;) {
        const r = await raw.read(28);
        const type = r.readUInt16BE(6);
        if (type === 2) return s.end();
        const length = r.readUInt32BE(24);
        s.write(Buffer.concat([u32(0x67446698), u32(0), r.subarray(8, 16), type === 0 ? Buffer.alloc(length) : Buffer.alloc(0)]));
      }
    })().catch(() => s.destroy());
  });
  return { path: await scripted.listen(srv), options, closed };
}

function blockSizes(min: number, preferred: number, max: number): Buffer {
  return Buffer.concat([u16(INFO_BLOCK_SIZE), u32(min), u32(preferred), u32(max)]);
}

describe('NbdClient holds NBD_INFO_BLOCK_SIZE to proto.md', () => {
  const broken: Array<[string, number, Buffer]> = [
    ['minimum 0', 8 * MiB, blockSizes(0, 4096, MiB)],
    ['minimum not a power of 2', 8 * MiB, blockSizes(3, 4096, 3 * MiB)],
    ['minimum over 64 KiB', 8 * MiB, blockSizes(128 * 1024, 128 * 1024, MiB)],
    ['preferred not a power of 2', 8 * MiB, blockSizes(512, 3000, MiB)],
    ['preferred below 512', 8 * MiB, blockSizes(1, 256, MiB)],
    ['preferred below the minimum', 8 * MiB, blockSizes(8192, 4096, MiB)],
    ['maximum not a multiple of the minimum', 8 * MiB, blockSizes(4096, 4096, MiB + 512)],
    ['maximum below the minimum', 8 * MiB, blockSizes(4096, 4096, 0)],
    ['maximum below the preferred size and the export size', 8 * MiB, blockSizes(512, 65536, 32768)],
    ['length 15 (one byte too many)', 8 * MiB, Buffer.concat([blockSizes(512, 4096, MiB), Buffer.alloc(1)])],
  ];
  for (const [why, size, info] of broken) {
    it(`${why}: CORRUPT, and the client sends nothing more`, async () => {
      const s = await server(size, info);
      const err = await NbdClient.connect({ path: s.path, structuredReplies: false, connectTimeoutMs: 10_000 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'CORRUPT', message: expect.stringMatching(/NBD_INFO_BLOCK_SIZE/) });
      await s.closed;
      expect(s.options).toEqual([7]);
    });
  }

  it('the maximum-vs-export-size rule holds whichever info comes first', async () => {
    const s = await server(8 * MiB, blockSizes(512, 65536, 32768), undefined, false);
    await expect(NbdClient.connect({ path: s.path, structuredReplies: false, connectTimeoutMs: 10_000 })).rejects.toMatchObject({ code: 'CORRUPT' });
  });

  it('NBD_INFO_EXPORT of length 13: CORRUPT', async () => {
    const s = await server(8 * MiB, blockSizes(512, 4096, MiB), Buffer.concat([u16(INFO_EXPORT), u64(8 * MiB), u16(1), Buffer.alloc(1)]));
    await expect(NbdClient.connect({ path: s.path, structuredReplies: false, connectTimeoutMs: 10_000 })).rejects.toMatchObject({
      code: 'CORRUPT',
      message: expect.stringMatching(/NBD_INFO_EXPORT/),
    });
  });

  const valid: Array<[string, number, Buffer, { min: number; preferred: number; max: number }]> = [
    ['no inherent maximum (0xffffffff, used as 32 MiB)', 8 * MiB, blockSizes(512, 4096, 0xffffffff), { min: 512, preferred: 4096, max: 32 * MiB }],
    ['a maximum that is a multiple of the minimum but not a power of 2', 8 * MiB, blockSizes(4096, 4096, 3 * MiB), { min: 4096, preferred: 4096, max: 3 * MiB }],
    ['a maximum below the preferred size but not below the export size', 16384, blockSizes(512, 65536, 16384), { min: 512, preferred: 65536, max: 16384 }],
    ['minimum 64 KiB', 8 * MiB, blockSizes(65536, 65536, MiB), { min: 65536, preferred: 65536, max: MiB }],
  ];
  for (const [why, size, info, expected] of valid) {
    it(`accepts ${why}`, async () => {
      const s = await server(size, info);
      const client = await NbdClient.connect({ path: s.path, structuredReplies: false, connectTimeoutMs: 10_000 });
      expect(client.size).toBe(size);
      expect(client.blockSizes).toEqual(expected);
      expect((await client.read(0, expected.min)).equals(Buffer.alloc(expected.min))).toBe(true);
      await client.disconnect();
    });
  }
});
