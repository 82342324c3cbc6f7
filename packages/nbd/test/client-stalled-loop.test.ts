// NbdClient after its event loop was held up past a deadline while the server's answer was
// already in the socket. Node runs the timers that expired meanwhile before it reads sockets, so
// a plain setTimeout failed the handshake, a request or the disconnect although the server had
// answered in time. A real peer (a scripted server in this process) answers, then blocks the
// loop (a synchronous wait longer than the deadline) right after; the client must take the answer.
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { ScriptedServers } from './helpers/scripted-servers.js';
import { chunk, DONE, fakeServer, OFFSET_DATA, offsetData, type RawSocket } from './helpers/raw-nbd.js';

const scripted = new ScriptedServers('nbd-sl-');
beforeAll(() => scripted.open());
afterAll(() => scripted.close());

/**
 * The deadline under test (ms). It must cover the work before the stall (the handshake's round
 * trips, a request and its reply) on a loaded machine; STALL exceeds it, so the deadline has
 * always passed when the loop runs again.
 */
const TIMEOUT = 1_000;
const STALL = 2 * TIMEOUT;
const CMD_READ = 0;
const CMD_DISC = 2;

/** Blocks this thread (and so the event loop) for `ms`. */
const stallLoop = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * A structured server of 64 KiB: `afterHandshake` runs once its last option reply is written;
 * then each read is answered with bytes of 0x5a (followed by `afterRead`), and NBD_CMD_DISC is
 * answered by closing the connection (followed by `afterDisc`).
 */
async function serve(hooks: { afterHandshake?: () => void; afterRead?: () => void; afterDisc?: () => void }): Promise<string> {
  const server = fakeServer(
    64 * 1024,
    async (s: net.Socket, raw: RawSocket) => {
      scripted.track(s);
      hooks.afterHandshake?.();
      for (;;) {
        const req = await raw.read(28);
        const type = req.readUInt16BE(6);
        if (type === CMD_DISC) {
          s.destroy(); // closes at once (s.end() would send its FIN only on the next loop turn)
          return hooks.afterDisc?.();
        }
        if (type !== CMD_READ) throw new Error(`unexpected request type ${type}`);
        const offset = Number(req.readBigUInt64BE(16));
        s.write(chunk(req, DONE, OFFSET_DATA, offsetData(offset, Buffer.alloc(req.readUInt32BE(24), 0x5a))));
        hooks.afterRead?.();
      }
    },
    { structuredContextId: 7 },
  );
  return scripted.listen(server);
}

describe('NbdClient deadlines after its event loop stalled past them', () => {
  it('a reply received before the stall ended completes its request: the request timeout does not close the connection', async () => {
    let stalls = 1;
    const path = await serve({ afterRead: () => void (stalls-- > 0 && stallLoop(STALL)) });
    const client = await NbdClient.connect({ path, requestTimeoutMs: TIMEOUT });
    try {
      expect(await client.read(0, 4096)).toEqual(Buffer.alloc(4096, 0x5a));
      expect(await client.read(4096, 4096)).toEqual(Buffer.alloc(4096, 0x5a)); // the connection is still up
    } finally {
      await client.disconnect();
    }
  });

  it('option replies received before the stall ended complete the handshake within connectTimeoutMs', async () => {
    const path = await serve({ afterHandshake: () => stallLoop(STALL) });
    const client = await NbdClient.connect({ path, connectTimeoutMs: TIMEOUT });
    try {
      expect(client.size).toBe(64 * 1024);
      expect(await client.read(0, 512)).toEqual(Buffer.alloc(512, 0x5a));
    } finally {
      await client.disconnect();
    }
  });

  it('a hang-up received before the stall ended completes disconnect() within disconnectTimeoutMs', async () => {
    const path = await serve({ afterDisc: () => stallLoop(STALL) });
    const client = await NbdClient.connect({ path, disconnectTimeoutMs: TIMEOUT });
    expect(await client.read(0, 512)).toEqual(Buffer.alloc(512, 0x5a));
    await expect(client.disconnect()).resolves.toBeUndefined();
  });
});
