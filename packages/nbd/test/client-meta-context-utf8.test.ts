// proto.md, NBD_REP_META_CONTEXT: the name "is not required to be a human-readable string, but it
// MUST be valid UTF-8 data". A name that is not would be decoded with U+FFFD in place of the bad
// bytes, so the client would take (or list) a context the server never named. NbdClient treats
// it as a protocol violation: CORRUPT and a hard disconnect (no NBD_OPT_ABORT, no NBD_OPT_GO), as
// for the other malformed option replies. Scripted servers over Unix sockets.
import type net from 'node:net';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { RawSocket, serveOptions, u16, u32, u64 } from './helpers/raw-nbd.js';
import { ScriptedServers } from './helpers/scripted-servers.js';

// Numbers from proto.md.
const OPT = { ABORT: 2, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 };
const REP = { ACK: 1, INFO: 3, META_CONTEXT: 4, ERR_UNSUP: 0x80000001 };
const SIZE = 1 << 20;

const scripted = new ScriptedServers('nbd-mcu-');
beforeAll(() => scripted.open());
afterAll(() => scripted.close());

/**
 * A server that acks structured replies, answers NBD_OPT_SET_META_CONTEXT and
 * NBD_OPT_LIST_META_CONTEXT with one NBD_REP_META_CONTEXT (id 1) named by the bytes `name`, and
 * NBD_OPT_GO with an export. `seen` gets the options received; `closed` settles when the client's
 * connection ends.
 */
async function serve(name: Buffer): Promise<{ path: string; seen: number[]; closed: Promise<void> }> {
  const seen: number[] = [];
  let onClosed!: () => void;
  const closed = new Promise<void>((resolve) => (onClosed = resolve));
  const server = createServer((s: net.Socket) => {
    scripted.track(s);
    s.on('error', () => undefined);
    s.on('close', onClosed);
    const raw = new RawSocket(s);
    void serveOptions(s, raw, ({ opt, reply }) => {
      seen.push(opt);
      if (opt === OPT.STRUCTURED_REPLY) reply(REP.ACK);
      else if (opt === OPT.SET_META || opt === OPT.LIST_META) {
        reply(REP.META_CONTEXT, Buffer.concat([u32(1), name]));
        reply(REP.ACK);
      } else if (opt === OPT.GO) {
        reply(REP.INFO, Buffer.concat([u16(0), u64(SIZE), u16(1)]));
        reply(REP.ACK);
        return true;
      } else if (opt === OPT.ABORT) {
        reply(REP.ACK);
        return true;
      } else reply(REP.ERR_UNSUP);
      return false;
    }).catch(() => s.destroy());
  });
  return { path: await scripted.listen(server), seen, closed };
}

// Not UTF-8: a lone 0xff, an overlong '/', a UTF-16 surrogate, a character cut short.
const BAD: Array<[string, Buffer]> = [
  ['0xff', Buffer.concat([Buffer.from('base:allocation'), Buffer.from([0xff])])],
  ['overlong', Buffer.concat([Buffer.from('x-a:'), Buffer.from([0xc0, 0xaf])])],
  ['surrogate', Buffer.concat([Buffer.from('x-a:'), Buffer.from([0xed, 0xa0, 0x80])])],
  ['truncated', Buffer.concat([Buffer.from('x-a:'), Buffer.from([0xe2, 0x82])])],
];

describe('NbdClient and NBD_REP_META_CONTEXT names that are not UTF-8', () => {
  it.each(BAD)('connect (NBD_OPT_SET_META_CONTEXT), %s: CORRUPT, hard disconnect before NBD_OPT_GO', async (_what, name) => {
    const { path, seen, closed } = await serve(name);
    await expect(NbdClient.connect({ path, metaContexts: ['base:allocation'], connectTimeoutMs: 10_000 })).rejects.toMatchObject({
      code: 'CORRUPT',
      message: expect.stringMatching(/NBD_REP_META_CONTEXT: context name is not valid UTF-8/),
    });
    await closed;
    expect(seen).toEqual([OPT.STRUCTURED_REPLY, OPT.SET_META]);
  });

  it.each(BAD)('listMetaContexts (NBD_OPT_LIST_META_CONTEXT), %s: CORRUPT, hard disconnect', async (_what, name) => {
    const { path, seen, closed } = await serve(name);
    await expect(NbdClient.listMetaContexts({ path, connectTimeoutMs: 10_000 }, '')).rejects.toMatchObject({
      code: 'CORRUPT',
      message: expect.stringMatching(/NBD_REP_META_CONTEXT: context name is not valid UTF-8/),
    });
    await closed;
    expect(seen).toEqual([OPT.STRUCTURED_REPLY, OPT.LIST_META]);
  });

  it('a valid multi-byte UTF-8 name is taken as sent (control)', async () => {
    const name = 'x-é:ü😀';
    const listed = await serve(Buffer.from(name));
    expect(await NbdClient.listMetaContexts({ path: listed.path, connectTimeoutMs: 10_000 }, '')).toEqual([name]);
    const selected = await serve(Buffer.from(name));
    const client = await NbdClient.connect({ path: selected.path, metaContexts: [name], connectTimeoutMs: 10_000 });
    expect([...client.metaContexts]).toEqual([[name, 1]]);
    await client.disconnect().catch(() => undefined);
  });
});
