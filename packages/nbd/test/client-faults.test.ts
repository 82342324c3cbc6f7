// NbdClient against hand-built servers that misbehave or stall: overlapping read chunks,
// block-status extents past the request, and servers that never answer or never hang up.
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdBlockDevice, NbdClient } from '../src/index.js';
import { sleep } from './helpers/outcome.js';
import { tempDir } from './helpers/peers.js';
import { BLOCK_STATUS, chunk, DONE, fakeServer, OFFSET_DATA, OFFSET_HOLE, offsetData, offsetHole, statusBody } from './helpers/raw-nbd.js';

const MiB = 1024 * 1024;
const CONTEXT_ID = 7;

let dir: { path: string; remove: () => Promise<void> };
let n = 0;
const servers: net.Server[] = [];

beforeAll(async () => {
  dir = await tempDir('nbd-cf-');
});
afterAll(async () => {
  for (const s of servers) s.close();
  await dir?.remove();
});

function listen(server: net.Server): Promise<string> {
  servers.push(server);
  const path = join(dir.path, `c${++n}.sock`);
  return new Promise((resolve) => server.listen(path, () => resolve(path)));
}

/** A structured fake server calling `answer` for every request it reads; sockets are kept to be destroyed at the end. */
function structuredServer(answer: (req: Buffer, s: net.Socket) => void, allowHalfOpen = false): { server: net.Server; sockets: net.Socket[] } {
  const sockets: net.Socket[] = [];
  const server = fakeServer(
    MiB,
    async (s, raw) => {
      sockets.push(s);
      for (;;) answer(await raw.read(28), s);
    },
    { structuredContextId: CONTEXT_ID, allowHalfOpen },
  );
  return { server, sockets };
}

describe('NbdClient structured read replies', () => {
  const reads: Array<[string, (req: Buffer) => Buffer[]]> = [
    ['the same half sent twice as OFFSET_DATA', (req) => [chunk(req, 0, OFFSET_DATA, offsetData(0, Buffer.alloc(8, 0x11))), chunk(req, DONE, OFFSET_DATA, offsetData(0, Buffer.alloc(8, 0x11)))]],
    ['an OFFSET_HOLE overlapping an OFFSET_DATA', (req) => [chunk(req, 0, OFFSET_DATA, offsetData(0, Buffer.alloc(8, 0x11))), chunk(req, DONE, OFFSET_HOLE, offsetHole(4, 8))]],
    ['an OFFSET_DATA inside an earlier OFFSET_HOLE', (req) => [chunk(req, 0, OFFSET_HOLE, offsetHole(0, 12)), chunk(req, DONE, OFFSET_DATA, offsetData(8, Buffer.alloc(4, 0x11)))]],
  ];

  it.each(reads)('chunks that overlap but add up to the request length (%s) fail the read with CORRUPT', async (_what, chunks) => {
    const { server, sockets } = structuredServer((req, s) => s.write(Buffer.concat(chunks(req))));
    const c = await NbdClient.connect({ path: await listen(server) });
    expect(c.structuredReplies).toBe(true);
    await expect(c.read(0, 16, Buffer.alloc(16, 0xee))).rejects.toMatchObject({ code: 'CORRUPT' });
    for (const s of sockets) s.destroy();
  });

  it('chunks that tile the request in any order read back exactly', async () => {
    const data = Buffer.from('0123456789abcdef');
    const { server, sockets } = structuredServer((req, s) =>
      s.write(
        Buffer.concat([
          chunk(req, 0, OFFSET_DATA, offsetData(12, data.subarray(12))),
          chunk(req, 0, OFFSET_HOLE, offsetHole(4, 4)),
          chunk(req, 0, OFFSET_DATA, offsetData(0, data.subarray(0, 4))),
          chunk(req, DONE, OFFSET_DATA, offsetData(8, data.subarray(8, 12))),
        ]),
      ),
    );
    const c = await NbdClient.connect({ path: await listen(server) });
    const expected = Buffer.from(data);
    expected.fill(0, 4, 8);
    expect((await c.read(0, 16, Buffer.alloc(16, 0xee))).equals(expected)).toBe(true);
    await c.disconnect().catch(() => undefined);
    for (const s of sockets) s.destroy();
  });
});

describe('NbdClient block status replies', () => {
  it('a final extent running past the request (allowed without REQ_ONE) is trimmed; a non-final one is CORRUPT', async () => {
    const { server, sockets } = structuredServer((req, s) => {
      const type = req.readUInt16BE(6);
      const offset = Number(req.readBigUInt64BE(16));
      if (type === 0) s.write(chunk(req, DONE, OFFSET_DATA, offsetData(offset, Buffer.alloc(req.readUInt32BE(24), 0x22))));
      else if (offset === 0) s.write(chunk(req, DONE, BLOCK_STATUS, statusBody(CONTEXT_ID, [[65536, 0]])));
      else s.write(chunk(req, DONE, BLOCK_STATUS, statusBody(CONTEXT_ID, [[8192, 0], [4096, 3]])));
    });
    const path = await listen(server);
    const c = await NbdClient.connect({ path });
    expect([...c.metaContexts]).toEqual([['base:allocation', CONTEXT_ID]]);
    expect(await c.blockStatus('base:allocation', 0, 4096)).toEqual([{ offset: 0, length: 4096, flags: 0 }]);
    expect(await c.mapExtents('base:allocation', 0, 4096)).toEqual([{ offset: 0, length: 4096, flags: 0 }]);
    expect((await c.read(0, 512)).equals(Buffer.alloc(512, 0x22))).toBe(true);
    await expect(c.blockStatus('base:allocation', 8192, 4096)).rejects.toMatchObject({ code: 'CORRUPT' });
    for (const s of sockets) s.destroy();
  });
});

describe('NbdClient timeouts', () => {
  /**
   * A server that reads requests (DISC included) and never answers nor hangs up, even after the
   * client's FIN; `readReceived` resolves once it has read a READ request.
   */
  function silentServer(): { server: net.Server; sockets: net.Socket[]; readReceived: Promise<void> } {
    let received!: () => void;
    const readReceived = new Promise<void>((resolve) => (received = resolve));
    const { server, sockets } = structuredServer((req) => {
      if (req.readUInt16BE(6) === 0) received();
    }, true);
    return { server, sockets, readReceived };
  }

  it('a request unanswered after requestTimeoutMs fails with UNAVAILABLE and closes the connection', async () => {
    const { server, sockets } = silentServer();
    const c = await NbdClient.connect({ path: await listen(server), requestTimeoutMs: 200 });
    const started = Date.now();
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('no reply bytes from the server') });
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    await expect(c.read(0, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    for (const s of sockets) s.destroy();
  });

  /** Writes `parts` to `s` one every `everyMs` (a slow link); stops when the socket is gone. */
  async function trickle(s: net.Socket, parts: Buffer[], everyMs: number): Promise<void> {
    for (const p of parts) {
      if (s.destroyed) return;
      s.write(p);
      await sleep(everyMs);
    }
  }

  it('a read whose reply keeps arriving is not timed out, though it takes several requestTimeoutMs in all', async () => {
    const data = Buffer.alloc(64 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    const { server, sockets } = structuredServer((req, s) => {
      const whole = chunk(req, DONE, OFFSET_DATA, offsetData(0, data));
      // 16 slices, one every 60 ms: about 1 s in all, never 300 ms without a byte.
      void trickle(s, Array.from({ length: 16 }, (_, i) => whole.subarray((i * whole.length) / 16, ((i + 1) * whole.length) / 16)), 60);
    });
    const c = await NbdClient.connect({ path: await listen(server), requestTimeoutMs: 300 });
    const started = Date.now();
    expect((await c.read(0, data.length)).equals(data)).toBe(true);
    expect(Date.now() - started).toBeGreaterThan(600);
    await c.disconnect().catch(() => undefined);
    for (const s of sockets) s.destroy();
  });

  it('requests queued behind others on a slow server are not timed out while replies keep coming', async () => {
    // The server answers one request every 150 ms, in order: the fifth waits 750 ms in all.
    let queue = Promise.resolve();
    const { server, sockets } = structuredServer((req, s) => {
      queue = queue.then(async () => {
        await sleep(150);
        if (!s.destroyed) s.write(chunk(req, DONE, OFFSET_DATA, offsetData(Number(req.readBigUInt64BE(16)), Buffer.alloc(req.readUInt32BE(24), 0x33))));
      });
    });
    const c = await NbdClient.connect({ path: await listen(server), requestTimeoutMs: 300 });
    const reads = await Promise.all(Array.from({ length: 5 }, (_, i) => c.read(i * 4096, 4096)));
    for (const r of reads) expect(r.equals(Buffer.alloc(4096, 0x33))).toBe(true);
    await c.disconnect().catch(() => undefined);
    for (const s of sockets) s.destroy();
  });

  it('a reply that stops arriving midway fails with UNAVAILABLE once requestTimeoutMs pass without a byte', async () => {
    const { server, sockets } = structuredServer((req, s) => {
      const whole = chunk(req, DONE, OFFSET_DATA, offsetData(0, Buffer.alloc(8192, 0x44)));
      void trickle(s, [whole.subarray(0, 1000), whole.subarray(1000, 2000)], 200); // then silence
    });
    const c = await NbdClient.connect({ path: await listen(server), requestTimeoutMs: 300 });
    const started = Date.now();
    await expect(c.read(0, 8192)).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('no reply bytes from the server') });
    // Counted from the last byte (at ~200 ms), not from sending.
    expect(Date.now() - started).toBeGreaterThanOrEqual(480);
    for (const s of sockets) s.destroy();
  });

  it('a request the server never answers while it answers later ones fails with UNAVAILABLE once a request sent requestTimeoutMs after it is answered', async () => {
    // Answers every read at once, except the one at offset 0: never.
    const { server, sockets } = structuredServer((req, s) => {
      const offset = Number(req.readBigUInt64BE(16));
      if (offset !== 0) s.write(chunk(req, DONE, OFFSET_DATA, offsetData(offset, Buffer.alloc(req.readUInt32BE(24), 0x55))));
    });
    const c = await NbdClient.connect({ path: await listen(server), requestTimeoutMs: 300 });
    const started = Date.now();
    const stalled = c.read(0, 4096);
    // A busy connection: a read every 50 ms, each answered, so bytes keep arriving.
    let busy = true;
    const traffic = (async () => {
      while (busy) {
        expect((await c.read(4096, 4096)).equals(Buffer.alloc(4096, 0x55))).toBe(true);
        await sleep(50);
      }
    })().catch((e: { code?: string }) => e.code);
    // No wall-clock bound on how soon: the test's timeout is the bound. Without the per-request
    // bound the read would never fail (bytes keep arriving); the message names the rule that tripped.
    await expect(stalled).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('though the server sent a reply chunk to a request sent') });
    busy = false;
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    await traffic; // ends: the connection is closed under it
    await expect(c.read(4096, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    for (const s of sockets) s.destroy();
  });

  it('a request answered out of order behind a queue of slow replies is not timed out, though it takes three times requestTimeoutMs', async () => {
    // One reply at a time on a slow wire (each trickled over ~100 ms), in the order the backend
    // finished; the read at offset 0 takes 150 ms in the backend, the others nothing. So the
    // eight reads sent with it overtake it, and it waits ~900 ms for the wire.
    let wire = Promise.resolve();
    const { server, sockets } = structuredServer((req, s) => {
      const offset = Number(req.readBigUInt64BE(16));
      const whole = chunk(req, DONE, OFFSET_DATA, offsetData(offset, Buffer.alloc(req.readUInt32BE(24), offset === 0 ? 0x66 : 0x77)));
      const send = (): void => {
        wire = wire.then(() => trickle(s, [0, 1, 2, 3].map((i) => whole.subarray((i * whole.length) / 4, ((i + 1) * whole.length) / 4)), 25));
      };
      if (offset === 0) setTimeout(send, 150);
      else send();
    });
    const c = await NbdClient.connect({ path: await listen(server), requestTimeoutMs: 300 });
    const started = Date.now();
    const first = c.read(0, 4096);
    const others = Array.from({ length: 8 }, (_, i) => c.read((i + 1) * 4096, 4096));
    // Newer requests keep coming while it waits; they queue behind it at the server.
    let waiting = true;
    void first.finally(() => (waiting = false)).catch(() => undefined);
    const more = (async () => {
      for (let i = 0; waiting; i++) await c.read((16 + (i % 8)) * 4096, 4096);
    })();
    expect((await first).equals(Buffer.alloc(4096, 0x66))).toBe(true);
    expect(Date.now() - started).toBeGreaterThan(800);
    for (const r of await Promise.all(others)) expect(r.equals(Buffer.alloc(4096, 0x77))).toBe(true);
    await more;
    await c.disconnect().catch(() => undefined);
    for (const s of sockets) s.destroy();
  });

  /**
   * A 1 MiB read the server sends as 16 OFFSET_DATA chunks of 64 KiB, stopping after `sent` of
   * them; every other read is answered at once, its reply landing between two chunks of the large
   * one (qemu interleaves replies so). Each chunk after the first is sent 50 ms after the one
   * before it and only once a small read has been answered since that one: a count reached, not a
   * number of reads hoped for in a time window. Meanwhile the client reads 4 KiB every 40 ms.
   * Resolves with what the large read came to, when, and how many small reads succeeded.
   */
  async function chunkedReadAmidTraffic(sent: number): Promise<{ result: string; message?: string; ms: number; small: number; big: Buffer; got?: Buffer }> {
    const big = Buffer.alloc(MiB);
    for (let i = 0; i < big.length; i++) big[i] = i % 253;
    const piece = 64 * 1024;
    let answered = 0; // small reads the server has answered
    let onAnswer: (() => void) | undefined;
    /** Resolves once more than `n` small reads have been answered. */
    const answeredMoreThan = (n: number): Promise<void> =>
      new Promise((resolve) => {
        const check = (): void => (answered > n ? resolve() : void (onAnswer = check));
        check();
      });
    const { server, sockets } = structuredServer((req, s) => {
      const offset = Number(req.readBigUInt64BE(16));
      const length = req.readUInt32BE(24);
      if (length !== MiB) {
        s.write(chunk(req, DONE, OFFSET_DATA, offsetData(offset, Buffer.alloc(length, 0x88))));
        answered++;
        const wake = onAnswer;
        onAnswer = undefined;
        wake?.();
        return;
      }
      const chunks = Array.from({ length: MiB / piece }, (_, i) => chunk(req, i === MiB / piece - 1 ? DONE : 0, OFFSET_DATA, offsetData(i * piece, big.subarray(i * piece, (i + 1) * piece))));
      void (async () => {
        let mark = answered;
        for (let i = 0; i < sent; i++) {
          if (i > 0) {
            await sleep(50);
            await answeredMoreThan(mark);
          }
          if (s.destroyed) return;
          s.write(chunks[i]);
          mark = answered;
        }
      })();
    });
    const c = await NbdClient.connect({ path: await listen(server), requestTimeoutMs: 300 });
    const started = Date.now();
    const large = c.read(0, MiB);
    let busy = true;
    let small = 0;
    void large.finally(() => (busy = false)).catch(() => undefined);
    const traffic = (async () => {
      while (busy) {
        expect((await c.read(4096, 4096)).equals(Buffer.alloc(4096, 0x88))).toBe(true);
        small++;
        await sleep(40);
      }
    })().catch(() => undefined);
    // Awaited without a wall-clock bound (the test's timeout is the bound): what the read came to.
    const [result, message] = await large.then(
      (): [string, string | undefined] => ['fulfilled', undefined],
      (e: { code?: string; message?: string }): [string, string | undefined] => [e.code ?? String(e), e.message],
    );
    const ms = Date.now() - started;
    busy = false;
    await traffic;
    const got = result === 'fulfilled' ? await large : undefined;
    await c.disconnect().catch(() => undefined);
    for (const s of sockets) s.destroy();
    return { result, message, ms, small, big, got };
  }

  it('a large read whose reply chunks keep arriving between replies to newer reads is not timed out, though newer reads are sent several requestTimeoutMs after it', async () => {
    const { result, ms, small, big, got } = await chunkedReadAmidTraffic(16);
    expect(result).toBe('fulfilled');
    expect(got!.equals(big)).toBe(true);
    expect(ms).toBeGreaterThan(600);
    // Newer reads were answered all along: one between every two chunks, so the one before the
    // last chunk was sent after the 14th chunk (>= 650 ms in) and answered while the read was open.
    expect(small).toBeGreaterThanOrEqual(15);
  });

  it('a large read whose reply chunks stop while newer reads are answered fails with UNAVAILABLE, counted from its last chunk', async () => {
    const { result, message, ms, small } = await chunkedReadAmidTraffic(2); // chunks at ~0 and ~50 ms, then none
    expect(result).toBe('UNAVAILABLE');
    // It failed by the per-request bound (bytes never stopped), not later than that by anything else.
    expect(message).toContain('though the server sent a reply chunk to a request sent');
    expect(ms).toBeGreaterThanOrEqual(340);
    // Newer reads were answered: the one between the two chunks, and the one whose reply tripped
    // the bound (it settles before the connection is closed).
    expect(small).toBeGreaterThanOrEqual(2);
  });

  it('disconnect() gives up after disconnectTimeoutMs with UNAVAILABLE, failing what is in flight, and closes', async () => {
    const { server, sockets, readReceived } = silentServer();
    const c = await NbdClient.connect({ path: await listen(server), disconnectTimeoutMs: 200 });
    const read = c.read(0, 4096);
    read.catch(() => undefined); // inspected below
    await readReceived; // in flight: the server has it
    await expect(c.disconnect()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(read).rejects.toMatchObject({ code: 'UNAVAILABLE' }); // the test's timeout is the bound
    for (const s of sockets) s.destroy();
  });

  it('disconnect() from a server that ignores NBD_CMD_DISC and never hangs up settles after disconnectTimeoutMs', async () => {
    const { server, sockets } = silentServer();
    const c = await NbdClient.connect({ path: await listen(server), disconnectTimeoutMs: 200 });
    await c.disconnect().catch(() => undefined); // settles (the test's timeout is the bound)
    for (const s of sockets) s.destroy();
  });

  it('NbdBlockDevice.close() does not hang on a server that stopped answering', async () => {
    const { server, sockets, readReceived } = silentServer();
    const device = await NbdBlockDevice.open({ path: await listen(server), disconnectTimeoutMs: 200 });
    const read = device.read(0, 4096);
    read.catch(() => undefined); // inspected below
    await readReceived; // in flight: the server has it
    await device.close().catch(() => undefined); // settles (the test's timeout is the bound)
    await expect(read).rejects.toMatchObject({ code: 'UNAVAILABLE' }); // the test's timeout is the bound
    for (const s of sockets) s.destroy();
  });
});
