// proto.md, "Block size constraints": "the client MUST ensure that *offset* and *length* are
// integer multiples of any advertised minimum block size ... the client MUST NOT use a *length*
// which, when added to *offset*, would exceed the export size", and "If a server advertises a
// minimum block size, the advertised export size SHOULD be an integer multiple of that block
// size, since otherwise, the client would be unable to access the final few bytes of the
// export." qemu-nbd 7.2 does advertise such an export (blkdebug align=4096 over a 12800-byte
// file: size 12800, minimum 4096); qemu's own client refuses it ("export size 12800 is not
// multiple of minimum block size 4096"). NbdClient must not send the unaligned request that
// reading that tail would take.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { RawSocket, serveOptions, u16, u32, u64 } from './helpers/raw-nbd.js';
import { ScriptedServers } from './helpers/scripted-servers.js';

const scripted = new ScriptedServers('nbd-mbt-');

beforeAll(() => scripted.open());
afterAll(() => scripted.close());

const SIZE = 12800;
const MIN = 4096;


/** A server offering an export of SIZE bytes with minimum block size MIN (simple replies only); records every request. */
async function server(requests: Array<{ type: number; offset: number; length: number }>): Promise<string> {
  const srv = net.createServer((s) => {
    scripted.track(s);
    s.on('error', () => undefined);
    const raw = new RawSocket(s);
    void (async () => {
      await serveOptions(s, raw, ({ opt, reply }) => {
        if (opt !== 7) {
          reply(0x80000001);
          return false;
        }
        reply(3, Buffer.concat([u16(0), u64(SIZE), u16(1)]));
        reply(3, Buffer.concat([u16(3), u32(MIN), u32(MIN), u32(32 * 1024 * 1024)]));
        reply(1);
        return true;
      });
      for (;;) {
        const r = await raw.read(28);
        const type = r.readUInt16BE(6);
        const offset = Number(r.readBigUInt64BE(16));
        const length = r.readUInt32BE(24);
        requests.push({ type, offset, length });
        if (type === 2) return s.end();
        s.write(Buffer.concat([u32(0x67446698), u32(0), r.subarray(8, 16), type === 0 ? Buffer.alloc(length, 7) : Buffer.alloc(0)]));
      }
    })().catch(() => s.destroy());
  });
  return scripted.listen(srv);
}

describe('NbdClient with an export size that is not a multiple of the minimum block size', () => {
  it('never sends a request whose offset or length is not a multiple of the minimum block size', async () => {
    const requests: Array<{ type: number; offset: number; length: number }> = [];
    const client = await NbdClient.connect({ path: await server(requests), structuredReplies: false });
    expect(client.size).toBe(SIZE);
    expect(client.blockSizes.min).toBe(MIN);
    // The addressable part reads as usual, unaligned reads in it through the bounce buffer.
    expect((await client.read(0, 3 * MIN)).equals(Buffer.alloc(3 * MIN, 7))).toBe(true);
    expect((await client.read(100, 5000)).equals(Buffer.alloc(5000, 7))).toBe(true);
    // The last SIZE % MIN bytes cannot be reached with aligned requests: refused before sending.
    await expect(client.read(SIZE - 100, 100)).rejects.toMatchObject({ code: 'NOT_SUPPORTED' });
    await expect(client.read(0, SIZE)).rejects.toMatchObject({ code: 'NOT_SUPPORTED' });
    await expect(client.read(2 * MIN + 10, MIN)).rejects.toMatchObject({ code: 'NOT_SUPPORTED' });
    await client.disconnect();
    const data = requests.filter((r) => r.type !== 2);
    expect(data.length).toBeGreaterThan(0);
    for (const r of data) {
      expect(r.offset % MIN, `request ${JSON.stringify(r)}`).toBe(0);
      expect(r.length % MIN, `request ${JSON.stringify(r)}`).toBe(0);
      expect(r.offset + r.length).toBeLessThanOrEqual(SIZE);
    }
  });
});
