// NbdClient.listExports / listMetaContexts against a server that answers, then ignores
// NBD_OPT_ABORT, never hangs up and keeps sending bytes. The client is done with the connection
// once it has its answer (qemu's client disconnects after NBD_OPT_ABORT without waiting), so it
// must let go of it: not keep the socket open for as long as the server likes, and not buffer
// what the server sends after the answer (nobody reads it).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { RawSocket, serveOptions, u32 } from './helpers/raw-nbd.js';
import { ScriptedServers } from './helpers/scripted-servers.js';

const scripted = new ScriptedServers('nbd-lh-');

beforeAll(() => scripted.open());
afterAll(() => scripted.close());

const MiB = 1024 * 1024;
/** What the server streams at full speed after its answer (bounded so a failing run stays small). */
const FLOOD = 128 * MiB;


interface Flooding {
  path: string;
  /** Resolves once FLOOD bytes were taken by the client, or its socket is gone. */
  flooded: Promise<void>;
  /** Resolves once the client's socket is gone for good (a write fails or the connection closes). */
  gone: Promise<void>;
}

/**
 * A fixed-newstyle server that answers NBD_OPT_STRUCTURED_REPLY (ACK), NBD_OPT_LIST (one export)
 * and NBD_OPT_LIST_META_CONTEXT (one context). Once it answered LIST or LIST_META_CONTEXT it
 * answers nothing more, never hangs up, sends FLOOD bytes as fast as the client takes them and
 * then a byte every 20 ms (a write to a socket the client closed fails, so `gone` resolves).
 */
async function floodingServer(): Promise<Flooding> {
  let goneResolve!: () => void;
  const gone = new Promise<void>((r) => (goneResolve = r));
  let floodedResolve!: () => void;
  const flooded = new Promise<void>((r) => (floodedResolve = r));
  void gone.then(floodedResolve);
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    scripted.track(s);
    const raw = new RawSocket(s);
    let sent = 0;
    let over = false;
    const finish = (): void => {
      over = true;
      goneResolve();
    };
    s.on('error', finish);
    s.on('close', finish);
    const piece = Buffer.alloc(MiB, 0x41);
    const more = (): void => {
      if (over) return;
      if (sent >= FLOOD) {
        floodedResolve();
        setTimeout(() => s.write(piece.subarray(0, 1), (err) => (err ? finish() : more())), 20);
        return;
      }
      s.write(piece, (err) => {
        if (err) return finish();
        sent += piece.length;
        more();
      });
    };
    serveOptions(s, raw, ({ opt, reply }) => {
      if (opt === 8) reply(1);
      else if (opt === 3 || opt === 9) {
        const name = Buffer.from(opt === 3 ? 'disk' : 'base:allocation');
        reply(opt === 3 ? 2 : 4, Buffer.concat([u32(opt === 3 ? name.length : 0), name]));
        reply(1);
        more(); // and never answer NBD_OPT_ABORT nor hang up
        return true;
      } else reply(0x80000001);
      return false;
    }).catch(() => undefined);
  });
  return { path: await scripted.listen(server), flooded, gone };
}

/** Runs `list` against a flooding server: the growth of this process's ArrayBuffers while the server floods, and whether the connection went within 3 s. */
async function afterList(list: (path: string) => Promise<string[]>): Promise<{ names: string[]; grownMiB: number; gone: string }> {
  const { path, flooded, gone } = await floodingServer();
  const before = process.memoryUsage().arrayBuffers;
  const names = await list(path);
  await flooded;
  const grownMiB = (process.memoryUsage().arrayBuffers - before) / MiB;
  const went = await Promise.race([gone.then(() => 'closed'), new Promise<string>((r) => setTimeout(() => r('still open'), 3000))]);
  return { names, grownMiB, gone: went };
}

describe('NbdClient list calls let go of the connection', () => {
  it('listExports: the bytes the server sends after the answer are not kept, and the connection is closed within 3 s', async () => {
    const r = await afterList((path) => NbdClient.listExports({ path }));
    expect(r.names).toEqual(['disk']);
    expect(r.grownMiB).toBeLessThan(32);
    expect(r.gone).toBe('closed');
  });

  it('listMetaContexts: the bytes the server sends after the answer are not kept, and the connection is closed within 3 s', async () => {
    const r = await afterList((path) => NbdClient.listMetaContexts({ path }, 'disk'));
    expect(r.names).toEqual(['base:allocation']);
    expect(r.grownMiB).toBeLessThan(32);
    expect(r.gone).toBe('closed');
  });
});
