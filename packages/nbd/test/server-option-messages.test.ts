// proto.md, "Conventions": a string, error messages included, "MUST NOT contain NUL characters"
// and "MUST be no longer than 4096 bytes". The server quotes the client's export name in some
// error replies; an export name may itself be 4096 bytes, so the message must be cut (on a UTF-8
// character boundary) rather than sent whole.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { optionFrame as option, optionReplies, rawHello, RawSocket, u16, u32 } from './helpers/raw-nbd.js';
import { serveOnSocket, type SocketServer } from './helpers/socket-server.js';

// Numbers from proto.md.
const OPT = { INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 };
const REP_ACK = 1;
const REP_ERR_UNKNOWN = 0x80000006;
const MAX_STRING = 4096;

let served: SocketServer;
beforeAll(async () => {
  served = await serveOnSocket('nbd-msg-', 1 << 20);
});
afterAll(() => served?.close());

/** The final reply to option `opt` (ACK or an error). */
async function finalReply(raw: RawSocket, opt: number): Promise<{ type: number; body: Buffer }> {
  return (await optionReplies(raw, opt)).at(-1)!;
}

describe('NbdServer option error messages are proto.md strings', () => {
  it('NBD_REP_ERR_UNKNOWN for a 4096-byte export name (ASCII, control characters, 2-byte characters) carries at most 4096 bytes of valid UTF-8 without NUL', async () => {
    const raw = await rawHello(served.path);
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
