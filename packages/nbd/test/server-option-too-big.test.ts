// proto.md: "The presence of the option length in every option allows the server to skip any
// options presented by the client that it does not understand"; servers "MUST NOT fail to parse
// the next message received"; NBD_REP_ERR_TOO_BIG: "The request or the reply is too large to
// process"; and a server "MUST (save where set out above) simply error inbound options", a hard
// disconnect being for a breach of a MUST or a denial of service. So an option whose data is over
// the 64 KiB the server parses is skipped and answered, and the session goes on; only data over
// 32 MiB (the denial-of-service bound) drops the client. Raw socket, numbers from proto.md.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { optionFrame as option, optionReplies as replies, rawHello, u16, u32 } from './helpers/raw-nbd.js';
import { serveOnSocket, type SocketServer } from './helpers/socket-server.js';

const IHAVEOPT = Buffer.from('IHAVEOPT');
const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, SET_META: 10 };
const REP_ACK = 1;
const REP_INFO = 3;
const REP_ERR_UNSUP = 0x80000001;
const REP_ERR_TOO_BIG = 0x80000009;
const KiB = 1024;
const MiB = 1024 * KiB;

let served: SocketServer;
beforeAll(async () => {
  served = await serveOnSocket('nbd-big-', MiB, 7);
});
afterAll(() => served?.close());

const hello = () => rawHello(served.path);

const goData = Buffer.concat([u32(1), Buffer.from('e'), u16(0)]);

describe('NbdServer options with data over 64 KiB', () => {
  it('are skipped and answered NBD_REP_ERR_TOO_BIG (known) or NBD_REP_ERR_UNSUP (unknown); the session goes on to NBD_OPT_GO', async () => {
    const raw = await hello();
    const cases: Array<[number, number, number]> = [
      [OPT.INFO, 64 * KiB + 1, REP_ERR_TOO_BIG],
      [OPT.LIST, 5 * MiB, REP_ERR_TOO_BIG],
      [OPT.SET_META, 200 * KiB, REP_ERR_TOO_BIG],
      [99, 100 * KiB, REP_ERR_UNSUP],
      [OPT.STRUCTURED_REPLY, 32 * MiB, REP_ERR_TOO_BIG],
    ];
    for (const [opt, length, expected] of cases) {
      // The data looks like an option header, so a server that parsed it as one would go astray.
      const data = Buffer.alloc(length);
      for (let at = 0; at + 16 <= length; at += 16) option(OPT.ABORT).copy(data, at);
      raw.write(option(opt, data));
      const [r, ...more] = await replies(raw, opt);
      expect(more, `option ${opt}`).toEqual([]);
      expect(r!.type, `option ${opt} with ${length} bytes`).toBe(expected);
    }
    raw.write(option(OPT.STRUCTURED_REPLY));
    expect((await replies(raw, OPT.STRUCTURED_REPLY)).at(-1)!.type).toBe(REP_ACK);
    raw.write(option(OPT.GO, goData));
    const go = await replies(raw, OPT.GO);
    expect(go.at(-1)!.type).toBe(REP_ACK);
    expect(go.some((r) => r.type === REP_INFO && r.body.readUInt16BE(0) === 0 && Number(r.body.readBigUInt64BE(2)) === MiB)).toBe(true);
    raw.socket.destroy();
  });

  it('NBD_OPT_ABORT with data over 64 KiB is acknowledged (proto.md: the server "SHOULD ignore any data")', async () => {
    const raw = await hello();
    raw.write(option(OPT.ABORT, Buffer.alloc(100 * KiB)));
    expect((await replies(raw, OPT.ABORT)).map((r) => r.type)).toEqual([REP_ACK]);
    raw.socket.destroy();
  });

  it('NBD_OPT_EXPORT_NAME with data over 64 KiB (it cannot be answered with an error) and any option with data over 32 MiB drop the client', async () => {
    for (const [opt, length] of [
      [OPT.EXPORT_NAME, 64 * KiB + 1],
      [OPT.INFO, 32 * MiB + 1],
      [OPT.GO, 0xffffffff],
    ] as const) {
      const raw = await hello();
      raw.write(Buffer.concat([IHAVEOPT, u32(opt), u32(length)]));
      raw.socket.resume();
      await raw.closed;
      expect(raw.pending, `option ${opt} of ${length} bytes`).toBe(0);
    }
    // The server still serves.
    const raw = await hello();
    raw.write(option(OPT.GO, goData));
    expect((await replies(raw, OPT.GO)).at(-1)!.type).toBe(REP_ACK);
    raw.socket.destroy();
  });
});
