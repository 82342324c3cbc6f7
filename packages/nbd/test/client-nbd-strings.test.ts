// proto.md, Conventions: a string "is a sequence of UTF-8 code points, which is not `NUL`
// terminated, MUST NOT contain `NUL` characters, SHOULD be no longer than 256 bytes and MUST be no
// longer than 4096 bytes"; NBD_REP_META_CONTEXT's name "MUST be valid UTF-8 data". NbdClient holds
// the server's strings to that: an NBD_REP_SERVER export name that is not valid UTF-8 or has a NUL,
// and an NBD_REP_META_CONTEXT name with a NUL, are protocol violations: CORRUPT and a hard
// disconnect (no NBD_OPT_ABORT, no NBD_OPT_GO), as for the other malformed option replies
// (client-meta-context-utf8.test.ts has meta context names that are not UTF-8). Scripted servers
// over Unix sockets.
import type net from 'node:net';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { RawSocket, serveOptions, u16, u32, u64, type ReceivedOption } from './helpers/raw-nbd.js';
import { ScriptedServers } from './helpers/scripted-servers.js';

// Numbers from proto.md.
const OPT = { ABORT: 2, LIST: 3, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 };
const REP = { ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4, ERR_UNSUP: 0x80000001 };
const SIZE = 1 << 20;

const scripted = new ScriptedServers('nbd-str-');
beforeAll(() => scripted.open());
afterAll(() => scripted.close());

/**
 * A server that lists one export named by the bytes `exportName` (NBD_OPT_LIST), acks structured
 * replies, answers NBD_OPT_SET_META_CONTEXT and NBD_OPT_LIST_META_CONTEXT with one
 * NBD_REP_META_CONTEXT (id 1) named by the bytes `contextName`, and NBD_OPT_GO with an export.
 * `seen` gets the options received; `closed` settles when the client's connection ends.
 */
async function serve(exportName: Buffer, contextName: Buffer): Promise<{ path: string; seen: number[]; closed: Promise<void> }> {
  const seen: number[] = [];
  let onClosed!: () => void;
  const closed = new Promise<void>((resolve) => (onClosed = resolve));
  const server = createServer((s: net.Socket) => {
    scripted.track(s);
    s.on('error', () => undefined);
    s.on('close', onClosed);
    const raw = new RawSocket(s);
    void serveOptions(s, raw, ({ opt, reply }: ReceivedOption) => {
      seen.push(opt);
      if (opt === OPT.LIST) {
        reply(REP.SERVER, Buffer.concat([u32(exportName.length), exportName]));
        reply(REP.ACK);
      } else if (opt === OPT.STRUCTURED_REPLY) reply(REP.ACK);
      else if (opt === OPT.SET_META || opt === OPT.LIST_META) {
        reply(REP.META_CONTEXT, Buffer.concat([u32(1), contextName]));
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

const GOOD = Buffer.from('base:allocation');

// Export names that are not NBD strings: not UTF-8 (a lone 0xff, a character cut short), or with a NUL.
const BAD_EXPORT: Array<[string, Buffer, RegExp]> = [
  ['0xff', Buffer.from([0x65, 0xff]), /NBD_REP_SERVER: export name is not valid UTF-8/],
  ['truncated', Buffer.from([0x65, 0xe2, 0x82]), /NBD_REP_SERVER: export name is not valid UTF-8/],
  ['NUL inside', Buffer.from('disk\0two'), /NBD_REP_SERVER: export name contains NUL/],
  ['NUL terminated', Buffer.from('disk\0'), /NBD_REP_SERVER: export name contains NUL/],
];

// Meta context names with a NUL (valid UTF-8, so only the NUL rule catches them).
const NUL_CONTEXT: Array<[string, Buffer]> = [
  ['NUL inside', Buffer.from('base:allocation\0x')],
  ['NUL terminated', Buffer.from('base:allocation\0')],
];

describe('NbdClient and server strings that are not NBD strings', () => {
  it.each(BAD_EXPORT)('listExports, NBD_REP_SERVER name %s: CORRUPT, hard disconnect (no NBD_OPT_ABORT)', async (_what, name, message) => {
    const { path, seen, closed } = await serve(name, GOOD);
    await expect(NbdClient.listExports({ path, connectTimeoutMs: 10_000 })).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringMatching(message) });
    await closed;
    expect(seen).toEqual([OPT.LIST]);
  });

  it.each(NUL_CONTEXT)('connect (NBD_OPT_SET_META_CONTEXT), context name %s: CORRUPT, hard disconnect before NBD_OPT_GO', async (_what, name) => {
    const { path, seen, closed } = await serve(Buffer.from('e'), name);
    await expect(NbdClient.connect({ path, metaContexts: ['base:allocation'], connectTimeoutMs: 10_000 })).rejects.toMatchObject({
      code: 'CORRUPT',
      message: expect.stringMatching(/NBD_REP_META_CONTEXT: context name contains NUL/),
    });
    await closed;
    expect(seen).toEqual([OPT.STRUCTURED_REPLY, OPT.SET_META]);
  });

  it.each(NUL_CONTEXT)('listMetaContexts (NBD_OPT_LIST_META_CONTEXT), context name %s: CORRUPT, hard disconnect', async (_what, name) => {
    const { path, seen, closed } = await serve(Buffer.from('e'), name);
    await expect(NbdClient.listMetaContexts({ path, connectTimeoutMs: 10_000 }, '')).rejects.toMatchObject({
      code: 'CORRUPT',
      message: expect.stringMatching(/NBD_REP_META_CONTEXT: context name contains NUL/),
    });
    await closed;
    expect(seen).toEqual([OPT.STRUCTURED_REPLY, OPT.LIST_META]);
  });

  it('multi-byte UTF-8 export and context names are taken as sent, then NBD_OPT_ABORT (control)', async () => {
    const exportName = 'dïsk-😀';
    const contextName = 'x-é:ü';
    const listed = await serve(Buffer.from(exportName), Buffer.from(contextName));
    expect(await NbdClient.listExports({ path: listed.path, connectTimeoutMs: 10_000 })).toEqual([exportName]);
    await listed.closed;
    expect(listed.seen).toEqual([OPT.LIST, OPT.ABORT]);
    const contexts = await serve(Buffer.from(exportName), Buffer.from(contextName));
    expect(await NbdClient.listMetaContexts({ path: contexts.path, connectTimeoutMs: 10_000 }, exportName)).toEqual([contextName]);
  });
});
