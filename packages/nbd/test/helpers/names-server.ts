import type net from 'node:net';
import { createServer } from 'node:net';
import { expect } from 'vitest';
import { NbdClient } from '../../src/index.js';
import { RawSocket, serveOptions, u16, u32, u64, type ReceivedOption } from './raw-nbd.js';
import type { ScriptedServers } from './scripted-servers.js';

// Numbers from proto.md.
const OPT = { ABORT: 2, LIST: 3, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 };
const REP = { ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4, ERR_UNSUP: 0x80000001 };
/** The size of the export the server below offers on NBD_OPT_GO. */
export const NAMES_EXPORT_SIZE = 1 << 20;

/**
 * A server that lists one export named by the bytes `exportName` (NBD_OPT_LIST), acks structured
 * replies, answers NBD_OPT_SET_META_CONTEXT and NBD_OPT_LIST_META_CONTEXT with one
 * NBD_REP_META_CONTEXT (id 1) named by the bytes `contextName`, and NBD_OPT_GO with an export.
 * `seen` gets the options received; `closed` settles when the client's connection ends.
 */
export async function serveNames(scripted: ScriptedServers, exportName: Buffer, contextName: Buffer): Promise<{ path: string; seen: number[]; closed: Promise<void> }> {
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
        reply(REP.INFO, Buffer.concat([u16(0), u64(NAMES_EXPORT_SIZE), u16(1)]));
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

/**
 * Serves the context name `contextName` (serveNames, export `e`) and expects the client to treat it
 * as a protocol violation: `connect` (NBD_OPT_SET_META_CONTEXT for base:allocation) or
 * `listMetaContexts` (NBD_OPT_LIST_META_CONTEXT) fails `CORRUPT` with `message`, and drops the
 * connection outright: the server saw NBD_OPT_STRUCTURED_REPLY and that option only (no
 * NBD_OPT_ABORT, no NBD_OPT_GO) before it closed.
 */
export async function expectContextNameRefused(scripted: ScriptedServers, contextName: Buffer, via: 'connect' | 'listMetaContexts', message: RegExp): Promise<void> {
  const { path, seen, closed } = await serveNames(scripted, Buffer.from('e'), contextName);
  const call =
    via === 'connect' ? NbdClient.connect({ path, metaContexts: ['base:allocation'], connectTimeoutMs: 10_000 }) : NbdClient.listMetaContexts({ path, connectTimeoutMs: 10_000 }, '');
  await expect(call).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringMatching(message) });
  await closed;
  expect(seen).toEqual([OPT.STRUCTURED_REPLY, via === 'connect' ? OPT.SET_META : OPT.LIST_META]);
}
