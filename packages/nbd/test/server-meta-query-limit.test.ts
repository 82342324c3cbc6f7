// NbdServer and meta context requests with many queries (proto.md, NBD_OPT_LIST_META_CONTEXT: "the
// server MAY fail with NBD_REP_ERR_TOO_BIG if too many queries are requested"; NBD_OPT_SET_META_CONTEXT:
// "The server MAY return NBD_REP_ERR_TOO_BIG if a request seeks to select too many contexts";
// NBD_REP_ERR_TOO_BIG: "The request or the reply is too large to process"). The server takes up to
// 1024 queries; a well-formed request with more is TOO_BIG, while a syntactically invalid one stays
// NBD_REP_ERR_INVALID ("the server MUST fail the request with NBD_REP_ERR_INVALID"). Raw socket.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { optionFrame, optionReplies, rawHello, RawSocket, u32 } from './helpers/raw-nbd.js';
import { serveOnSocket, type SocketServer } from './helpers/socket-server.js';

// Numbers from proto.md, written here so the test holds the server to the spec.
const OPT = { STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 };
const REP = { ACK: 1, META_CONTEXT: 4, ERR_INVALID: 0x80000003, ERR_TOO_BIG: 0x80000009 };
const LIMIT = 1024;

let served: SocketServer;
beforeAll(async () => {
  served = await serveOnSocket('nbd-mq-', 1 << 20);
});
afterAll(() => served?.close());

/** Sends one option and returns its replies (type, META_CONTEXT name) up to the final one. */
async function option(raw: RawSocket, opt: number, data: Buffer): Promise<Array<{ type: number; name?: string }>> {
  raw.write(optionFrame(opt, data));
  return (await optionReplies(raw, opt)).map(({ type, body }) => (type === REP.META_CONTEXT ? { type, name: body.subarray(4).toString() } : { type }));
}

function metaRequest(exportName: string, queries: string[]): Buffer {
  const name = Buffer.from(exportName);
  return Buffer.concat([u32(name.length), name, u32(queries.length), ...queries.flatMap((q) => [u32(Buffer.byteLength(q)), Buffer.from(q)])]);
}

/** `n` queries, the last one `base:allocation`, the others names the server does not offer. */
function queries(n: number): string[] {
  return [...Array.from({ length: n - 1 }, (_, i) => `x-none:${i}`), 'base:allocation'];
}

async function structuredSession(): Promise<RawSocket> {
  const raw = await rawHello(served.path);
  expect(await option(raw, OPT.STRUCTURED_REPLY, Buffer.alloc(0))).toEqual([{ type: REP.ACK }]);
  return raw;
}

describe('NbdServer meta context requests over 1024 queries', () => {
  it.each([
    ['NBD_OPT_LIST_META_CONTEXT', OPT.LIST_META],
    ['NBD_OPT_SET_META_CONTEXT', OPT.SET_META],
  ])('%s with 1025 queries is answered NBD_REP_ERR_TOO_BIG alone; with 1024 it is served; the session goes on', async (_name, opt) => {
    const raw = await structuredSession();
    expect(await option(raw, opt, metaRequest('e', queries(LIMIT + 1)))).toEqual([{ type: REP.ERR_TOO_BIG }]);
    expect(await option(raw, opt, metaRequest('e', queries(LIMIT)))).toEqual([{ type: REP.META_CONTEXT, name: 'base:allocation' }, { type: REP.ACK }]);
    raw.socket.destroy();
  });

  it('a malformed request claiming over 1024 queries is still NBD_REP_ERR_INVALID (syntactically invalid: MUST)', async () => {
    const raw = await structuredSession();
    // Declares 5000 queries, carries 1025.
    const short = metaRequest('e', queries(LIMIT + 1));
    short.writeUInt32BE(5000, 4 + 1);
    expect(await option(raw, OPT.LIST_META, short)).toEqual([{ type: REP.ERR_INVALID }]);
    // Trailing bytes after 1025 queries.
    expect(await option(raw, OPT.SET_META, Buffer.concat([metaRequest('e', queries(LIMIT + 1)), Buffer.from('junk')]))).toEqual([{ type: REP.ERR_INVALID }]);
    raw.socket.destroy();
  });

  it('NBD_OPT_LIST_META_CONTEXT with no query lists every context (never TOO_BIG: proto.md "SHOULD NOT")', async () => {
    const raw = await structuredSession();
    expect(await option(raw, OPT.LIST_META, metaRequest('e', []))).toEqual([{ type: REP.META_CONTEXT, name: 'base:allocation' }, { type: REP.ACK }]);
    raw.socket.destroy();
  });
});
