// A server that keeps sending non-final option replies (NBD_REP_SERVER to NBD_OPT_LIST,
// NBD_REP_META_CONTEXT to NBD_OPT_SET_META_CONTEXT, NBD_REP_INFO to NBD_OPT_GO) must get a clear
// CORRUPT at once, not have the client collect them until connectTimeoutMs (30 s) runs out.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { outcome } from './helpers/outcome.js';
import { ScriptedServers } from './helpers/scripted-servers.js';
import { GREETING, optionReply, u16, u32 } from './helpers/raw-nbd.js';

const scripted = new ScriptedServers('nbd-hb-');

beforeAll(() => scripted.open());
afterAll(() => scripted.close());

/**
 * A fixed-newstyle server that acks NBD_OPT_STRUCTURED_REPLY and answers option `endless` with
 * `body(i)` replies of type `type` for ever (never a final reply), honouring backpressure and
 * stopping once the client hangs up. Every other option gets NBD_REP_ERR_UNSUP.
 */
async function floodingServer(endless: number, type: number, body: (i: number) => Buffer): Promise<{ path: string; sent: () => number }> {
  let sent = 0;
  const server = net.createServer((s) => {
    scripted.track(s);
    s.on('error', () => undefined);
    let gone = false;
    s.once('close', () => (gone = true));
    s.write(GREETING);
    let buf = Buffer.alloc(0);
    let flooding = false;
    let flagsRead = false;
    const flood = (opt: number): void => {
      while (!gone) {
        const batch: Buffer[] = [];
        for (let i = 0; i < 256; i++) batch.push(optionReply(opt, type, body(sent++)));
        if (!s.write(Buffer.concat(batch))) {
          s.once('drain', () => flood(opt));
          return;
        }
      }
    };
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!flagsRead) {
        if (buf.length < 4) return;
        buf = buf.subarray(4); // the client flags
        flagsRead = true;
      }
      while (!flooding && buf.length >= 16) {
        const opt = buf.readUInt32BE(8);
        const len = buf.readUInt32BE(12);
        if (buf.length < 16 + len) return;
        buf = buf.subarray(16 + len);
        if (opt === endless) {
          flooding = true;
          flood(opt);
        } else if (opt === 8) s.write(optionReply(opt, 1));
        else s.write(optionReply(opt, 0x80000001));
      }
    });
  });
  return { path: await scripted.listen(server), sent: () => sent };
}

describe('NbdClient option replies are bounded', () => {
  it('listExports: endless NBD_REP_SERVER replies fail with CORRUPT well before connectTimeoutMs', async () => {
    const { path } = await floodingServer(3, 2, (i) => Buffer.concat([u32(12), Buffer.from(`export${String(i).padStart(6, '0')}`.slice(0, 12))]));
    expect(await outcome(NbdClient.listExports({ path, connectTimeoutMs: 30_000 }), 5_000)).toBe('CORRUPT');
  });

  it('connect: endless NBD_REP_META_CONTEXT replies to SET_META_CONTEXT fail with CORRUPT', async () => {
    const { path } = await floodingServer(10, 4, (i) => Buffer.concat([u32(i), Buffer.from(`x-flood:ctx${i}`)]));
    expect(await outcome(NbdClient.connect({ path, connectTimeoutMs: 30_000 }), 5_000)).toBe('CORRUPT');
  });

  it('connect: endless NBD_REP_INFO replies to NBD_OPT_GO fail with CORRUPT', async () => {
    const info = Buffer.concat([u16(0), Buffer.alloc(8), u16(1)]); // NBD_INFO_EXPORT, size 0, flags HAS_FLAGS
    const { path } = await floodingServer(7, 3, () => info);
    expect(await outcome(NbdClient.connect({ path, connectTimeoutMs: 30_000, structuredReplies: false }), 5_000)).toBe('CORRUPT');
  });
});
