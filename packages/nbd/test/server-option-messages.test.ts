// proto.md, "Conventions": a string, error messages included, "MUST NOT contain NUL characters"
// and "MUST be no longer than 4096 bytes". The server quotes the client's export name in some
// error replies; an export name may itself be 4096 bytes, so the message must be cut (on a UTF-8
// character boundary) rather than sent whole.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdServer } from '../src/index.js';
import { tempDir } from './helpers/peers.js';
import { RawSocket, u16, u32 } from './helpers/raw-nbd.js';

// Numbers from proto.md.
const IHAVEOPT = Buffer.from('IHAVEOPT');
const OPT = { INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 };
const REP_ACK = 1;
const REP_ERR_UNKNOWN = 0x80000006;
const MAX_STRING = 4096;

let dir: { path: string; remove: () => Promise<void> };
let server: NbdServer;
let path: string;

beforeAll(async () => {
  dir = await tempDir('nbd-msg-');
  server = new NbdServer({ exports: [{ name: 'e', backend: { size: 1 << 20, read: async (_o: number, l: number) => Buffer.alloc(l) } }] });
  path = join(dir.path, 's.sock');
  await server.listen({ path });
});
afterAll(async () => {
  await server?.close();
  await dir?.remove();
});

function option(opt: number, data: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([IHAVEOPT, u32(opt), u32(data.length), data]);
}

/** Reads option replies up to the final one (ACK or an error); returns the final one. */
async function finalReply(raw: RawSocket, opt: number): Promise<{ type: number; body: Buffer }> {
  for (;;) {
    const head = await raw.read(20);
    expect(head.readUInt32BE(8)).toBe(opt);
    const type = head.readUInt32BE(12);
    const body = await raw.read(head.readUInt32BE(16));
    if (type === REP_ACK || type >= 0x80000000) return { type, body };
  }
}

describe('NbdServer option error messages are proto.md strings', () => {
  it('NBD_REP_ERR_UNKNOWN for a 4096-byte export name (ASCII, control characters, 2-byte characters) carries at most 4096 bytes of valid UTF-8 without NUL', async () => {
    const raw = await RawSocket.connect(path);
    await raw.read(18);
    raw.write(u32(3));
    raw.write(option(OPT.STRUCTURED_REPLY));
    expect((await finalReply(raw, OPT.STRUCTURED_REPLY)).type).toBe(REP_ACK);
    const names = [Buffer.alloc(MAX_STRING, 'a'), Buffer.alloc(MAX_STRING, 0x01), Buffer.from('é'.repeat(MAX_STRING / 2))];
    const decoder = new TextDecoder('utf-8', { fatal: true });
    for (const name of names) {
      expect(name.length).toBe(MAX_STRING);
      const requests: Array<[number, Buffer]> = [
        [OPT.INFO, Buffer.concat([u32(name.length), name, u16(0)])],
        [OPT.GO, Buffer.concat([u32(name.length), name, u16(0)])],
        [OPT.LIST_META, Buffer.concat([u32(name.length), name, u32(0)])],
        [OPT.SET_META, Buffer.concat([u32(name.length), name, u32(0)])],
      ];
      for (const [opt, data] of requests) {
        raw.write(option(opt, data));
        const { type, body } = await finalReply(raw, opt);
        expect(type).toBe(REP_ERR_UNKNOWN);
        expect(body.length).toBeGreaterThan(0);
        expect(body.length).toBeLessThanOrEqual(MAX_STRING);
        expect(body.includes(0)).toBe(false);
        expect(decoder.decode(body)).toMatch(/^no export "/);
      }
    }
    // Still negotiating: the real export is served.
    raw.write(option(OPT.GO, Buffer.concat([u32(1), Buffer.from('e'), u16(0)])));
    expect((await finalReply(raw, OPT.GO)).type).toBe(REP_ACK);
    raw.socket.destroy();
  });
});
