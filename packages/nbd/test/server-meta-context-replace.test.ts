// NbdServer and NBD_OPT_SET_META_CONTEXT that fails (proto.md): "Issuing this command replaces all
// previously-set metadata contexts (including when this command fails)". A client that selected
// base:allocation, then sent a SET_META_CONTEXT the server refuses, has no context selected: a
// BLOCK_STATUS after NBD_OPT_GO gets EINVAL ("Servers SHOULD reply with NBD_EINVAL to clients
// sending NBD_CMD_BLOCK_STATUS without selecting at least one metadata context"). Raw sockets.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdServer, type NbdBackend } from '../src/index.js';
import { tempDir } from './helpers/peers.js';
import { BLOCK_STATUS, DONE, ERROR, RawSocket, flaggedRequest, readChunk, u16, u32 } from './helpers/raw-nbd.js';

// Numbers from proto.md, written here so the test holds the server to the spec.
const IHAVEOPT = Buffer.from('IHAVEOPT');
const OPT = { GO: 7, STRUCTURED_REPLY: 8, SET_META_CONTEXT: 10 };
const REP = { ACK: 1, META_CONTEXT: 4, ERR_INVALID: 0x80000003, ERR_UNKNOWN: 0x80000006 };
const CMD_BLOCK_STATUS = 7;
const EINVAL = 22;
const SIZE = 64 * 1024;

const backend: NbdBackend = { size: SIZE, read: async (o, len) => Buffer.alloc(len) };
let dir: { path: string; remove: () => Promise<void> };
let server: NbdServer;
let path: string;

beforeAll(async () => {
  dir = await tempDir('nbd-meta-');
  server = new NbdServer({ exports: [{ name: 'x', backend }] });
  path = join(dir.path, 'x.sock');
  await server.listen({ path });
});
afterAll(async () => {
  await server?.close({ drainTimeoutMs: 1000 });
  await dir?.remove();
});

/** Sends one option and returns its replies' types (and META_CONTEXT names) up to the final one. */
async function option(raw: RawSocket, opt: number, data: Buffer): Promise<Array<{ type: number; name?: string }>> {
  raw.write(Buffer.concat([IHAVEOPT, u32(opt), u32(data.length), data]));
  const replies: Array<{ type: number; name?: string }> = [];
  for (;;) {
    const head = await raw.read(20);
    const type = head.readUInt32BE(12);
    const body = await raw.read(head.readUInt32BE(16));
    replies.push(type === REP.META_CONTEXT ? { type, name: body.subarray(4).toString() } : { type });
    if (type === REP.ACK || type >= 0x80000000) return replies;
  }
}

function metaRequest(exportName: string, queries: string[]): Buffer {
  const name = Buffer.from(exportName);
  return Buffer.concat([u32(name.length), name, u32(queries.length), ...queries.flatMap((q) => [u32(Buffer.byteLength(q)), Buffer.from(q)])]);
}

/** Structured replies, base:allocation selected on "x", then `failing` (which must be refused), then GO "x". */
async function selectThenFail(failing: Buffer, refusal: number): Promise<RawSocket> {
  const raw = await RawSocket.connect(path);
  await raw.read(18);
  raw.write(u32(3));
  expect(await option(raw, OPT.STRUCTURED_REPLY, Buffer.alloc(0))).toEqual([{ type: REP.ACK }]);
  expect(await option(raw, OPT.SET_META_CONTEXT, metaRequest('x', ['base:allocation']))).toEqual([
    { type: REP.META_CONTEXT, name: 'base:allocation' },
    { type: REP.ACK },
  ]);
  expect(await option(raw, OPT.SET_META_CONTEXT, failing)).toEqual([{ type: refusal }]);
  const name = Buffer.from('x');
  const go = await option(raw, OPT.GO, Buffer.concat([u32(name.length), name, u16(0)]));
  expect(go.at(-1)).toEqual({ type: REP.ACK });
  return raw;
}

async function expectNoContext(raw: RawSocket): Promise<void> {
  raw.write(flaggedRequest(CMD_BLOCK_STATUS, 0, 1, 0, SIZE));
  const c = await readChunk(raw);
  expect(c.type, 'a BLOCK_STATUS chunk means base:allocation was still selected').not.toBe(BLOCK_STATUS);
  expect({ cookie: c.cookie, type: c.type, done: c.flags & DONE, errno: c.body.readUInt32BE(0) }).toEqual({ cookie: 1, type: ERROR, done: DONE, errno: EINVAL });
  raw.socket.destroy();
}

describe('NbdServer: a failed NBD_OPT_SET_META_CONTEXT clears the earlier selection', () => {
  it('malformed request (NBD_REP_ERR_INVALID)', async () => {
    const malformed = Buffer.concat([metaRequest('x', ['base:allocation']), Buffer.from('junk')]);
    await expectNoContext(await selectThenFail(malformed, REP.ERR_INVALID));
  });

  it('unknown export (NBD_REP_ERR_UNKNOWN)', async () => {
    await expectNoContext(await selectThenFail(metaRequest('nope', ['base:allocation']), REP.ERR_UNKNOWN));
  });

  it('a selection that succeeds still holds (control)', async () => {
    const raw = await RawSocket.connect(path);
    await raw.read(18);
    raw.write(u32(3));
    await option(raw, OPT.STRUCTURED_REPLY, Buffer.alloc(0));
    await option(raw, OPT.SET_META_CONTEXT, metaRequest('x', ['base:allocation']));
    const name = Buffer.from('x');
    await option(raw, OPT.GO, Buffer.concat([u32(name.length), name, u16(0)]));
    raw.write(flaggedRequest(CMD_BLOCK_STATUS, 0, 1, 0, SIZE));
    const c = await readChunk(raw);
    expect({ cookie: c.cookie, type: c.type }).toEqual({ cookie: 1, type: BLOCK_STATUS });
    raw.socket.destroy();
  });
});
