// NbdClient's per-request bound (requestTimeoutMs) against scripted servers that hold one request
// back while they go on answering others: every request in flight is bounded, not only the oldest.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { outcome, sleep } from './helpers/outcome.js';
import { ScriptedServers } from './helpers/scripted-servers.js';
import { chunk, DONE, EINVAL, ERROR_OFFSET, errorBody, fakeServer, NONE, OFFSET_DATA, offsetData } from './helpers/raw-nbd.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const TIMEOUT = 300;
/** The message of the per-request bound (a held request, while the server answers others). */
const HELD_BACK = 'though the server sent a reply chunk to a request sent';

const scripted = new ScriptedServers('nbd-rb-');

beforeAll(() => scripted.open());
afterAll(() => scripted.close());

/** A structured fake server of 8 MiB calling `answer` for every request it reads; resolves with its socket path. */
async function serve(answer: (req: Buffer, s: net.Socket) => void): Promise<string> {
  const server = fakeServer(
    8 * MiB,
    async (s, raw) => {
      scripted.track(s);
      for (;;) answer(await raw.read(28), s);
    },
    { structuredContextId: 7 },
  );
  return scripted.listen(server);
}

const offsetOf = (req: Buffer): number => Number(req.readBigUInt64BE(16));
const lengthOf = (req: Buffer): number => req.readUInt32BE(24);

/** The whole reply to a read, in one chunk, filled with `fill`. */
function wholeReply(req: Buffer, fill: number): Buffer {
  return chunk(req, DONE, OFFSET_DATA, offsetData(offsetOf(req), Buffer.alloc(lengthOf(req), fill)));
}

/** Sends the reply to a read as OFFSET_DATA chunks of 4 KiB, one every `everyMs`, the last with DONE; stops when the socket is gone. */
async function trickleRead(s: net.Socket, req: Buffer, everyMs: number): Promise<void> {
  const offset = offsetOf(req);
  const length = lengthOf(req);
  for (let at = 0; at < length; at += 4 * KiB) {
    if (s.destroyed) return;
    const last = at + 4 * KiB >= length;
    s.write(chunk(req, last ? DONE : 0, OFFSET_DATA, offsetData(offset + at, Buffer.alloc(Math.min(4 * KiB, length - at), 0x5a))));
    await sleep(everyMs);
  }
}

/** `p`, with its rejection marked handled (the test inspects it with `outcome`, or not at all when an assertion fails first). */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/**
 * Resolves once the first `n` chunks of 4 KiB of a `trickleRead` reply have landed in `into` (the
 * client copies read data straight into the target, and handles a chunk in the same step as its
 * last byte): a count reached, awaited with the test's timeout as the bound. `into` starts zeroed.
 * Resolves as well once `unless` has settled, so that a check of it fails at once, not at the timeout.
 */
async function chunksLanded(into: Buffer, n: number, unless: Promise<unknown>): Promise<void> {
  let settled = false;
  unless.then(
    () => (settled = true),
    () => (settled = true),
  );
  while (!settled && into[n * 4 * KiB - 1] !== 0x5a) await sleep(5);
}

/** Reads 4 KiB at `offset` every 40 ms until `busy()` is false; resolves with how many succeeded (stops at the first failure). */
async function traffic(c: NbdClient, offset: number, busy: () => boolean): Promise<number> {
  let done = 0;
  try {
    while (busy()) {
      await c.read(offset, 4096);
      done++;
      await sleep(40);
    }
  } catch {
    // the connection was closed under it
  }
  return done;
}

describe('NbdClient per-request bound (requestTimeoutMs)', () => {
  it('read() of a request held back while an older read is answered chunk by chunk and newer reads are answered fails with UNAVAILABLE, counted from the first chunk of the older reply', async () => {
    // The read at 0 (1 MiB) comes as 256 chunks, one every 50 ms (~13 s); the read at 1 MiB is
    // never answered; every other read is answered at once. Bytes never stop, and the oldest
    // request keeps advancing, so only the request behind it shows the server holding it back.
    const path = await serve((req, s) => {
      const offset = offsetOf(req);
      if (offset === 0) void trickleRead(s, req, 50);
      else if (offset !== MiB) s.write(wholeReply(req, 0x11));
    });
    const c = await NbdClient.connect({ path, requestTimeoutMs: TIMEOUT });
    const started = performance.now();
    const older = quiet(c.read(0, MiB));
    const held = quiet(c.read(MiB, 4096));
    let busy = true;
    const answered = traffic(c, 2 * MiB, () => busy);
    // Awaited without a wall-clock bound (the test's timeout is the bound): bytes never stop, so
    // only the per-request bound can fail it, as its message says.
    await expect(held).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining(HELD_BACK) });
    const ms = performance.now() - started;
    busy = false;
    expect(ms).toBeGreaterThanOrEqual(TIMEOUT - 10);
    expect(await answered).toBeGreaterThan(3); // newer reads were answered while it was held
    await expect(older).rejects.toMatchObject({ code: 'UNAVAILABLE' }); // the connection is closed
    await expect(c.read(2 * MiB, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('read() of a request held back while the server sends chunks of the reply to a newer read, completing none, fails with UNAVAILABLE at the first such chunk', async () => {
    // The read at 0 is never answered. The reads at 1 MiB (sent with it) and at 4 MiB (sent
    // 350 ms later) are answered as 256 chunks, one every 50 ms: bytes never stop, and no reply
    // completes for ~13 s.
    const path = await serve((req, s) => {
      if (offsetOf(req) !== 0) void trickleRead(s, req, 50);
    });
    const c = await NbdClient.connect({ path, requestTimeoutMs: TIMEOUT });
    const started = performance.now();
    const held = quiet(c.read(0, 4096));
    const earlyInto = Buffer.alloc(MiB);
    const early = quiet(c.read(MiB, MiB, earlyInto));
    // The 8th chunk of the early reply was sent 350 ms (TIMEOUT + 50) or more after the held read.
    await chunksLanded(earlyInto, 8, held);
    expect(await outcome(held, 0)).toBe('pending'); // the early read's chunks do not count against it
    const late = quiet(c.read(4 * MiB, MiB));
    await expect(held).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining(HELD_BACK) }); // the test's timeout is the bound
    await expect(early).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(late).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('read() of a held request whose reply arrives in the same socket read as, and after, the reply that trips the bound fails with UNAVAILABLE, as every request in flight, with one error', async () => {
    // The read at 0 is held until the read at 4 MiB (sent 350 ms later) comes in; then one write
    // carries the reply to the read at 4 MiB and, behind it, the reply to the read at 0. The read
    // at 1 MiB (sent with the one at 0) trickles in chunks meanwhile, so bytes never stop.
    let heldReq: Buffer | undefined;
    const path = await serve((req, s) => {
      const offset = offsetOf(req);
      if (offset === 0) heldReq = req;
      else if (offset === MiB) void trickleRead(s, req, 50);
      else s.write(Buffer.concat([wholeReply(req, 0x55), wholeReply(heldReq!, 0x66)]));
    });
    const c = await NbdClient.connect({ path, requestTimeoutMs: TIMEOUT });
    const held = quiet(c.read(0, 4096));
    const trickledInto = Buffer.alloc(MiB);
    const trickled = quiet(c.read(MiB, MiB, trickledInto));
    // The 8th chunk of the trickled reply was sent 350 ms (TIMEOUT + 50) or more after the held read.
    await chunksLanded(trickledInto, 8, held);
    expect(await outcome(held, 0)).toBe('pending');
    void quiet(c.read(4 * MiB, 4096)); // its reply was whole before the bound tripped
    await expect(held).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining(HELD_BACK) }); // the test's timeout is the bound
    await expect(trickled).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    const [a, b] = await Promise.all([held.catch((e: unknown) => e), trickled.catch((e: unknown) => e)]);
    expect(b).toBe(a);
    await expect(c.read(2 * MiB, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('read() of a request the server serialises behind an older one resolves while newer reads are answered, though it waits longer than requestTimeoutMs in all', async () => {
    // Reads at offset 0 go through one queue, 200 ms each (no chunks before the reply); every
    // other read is answered at once. The second read at 0 waits ~400 ms, each within 200 ms
    // of the one before it being answered.
    let queue = Promise.resolve();
    const path = await serve((req, s) => {
      if (offsetOf(req) !== 0) return void s.write(wholeReply(req, 0x22));
      queue = queue.then(async () => {
        await sleep(200);
        if (!s.destroyed) s.write(wholeReply(req, 0x33));
      });
    });
    const c = await NbdClient.connect({ path, requestTimeoutMs: TIMEOUT });
    const started = performance.now();
    const first = c.read(0, 4096);
    const second = c.read(0, 4096);
    let busy = true;
    const answered = traffic(c, MiB, () => busy);
    expect((await first).equals(Buffer.alloc(4096, 0x33))).toBe(true);
    expect((await second).equals(Buffer.alloc(4096, 0x33))).toBe(true);
    expect(performance.now() - started).toBeGreaterThan(TIMEOUT + 50);
    busy = false;
    expect(await answered).toBeGreaterThan(5);
    await c.disconnect();
  });

  it('read() of requests queued behind an older read whose chunks keep arriving resolve, though the older reply takes several requestTimeoutMs', async () => {
    // An in-order server: the 512 KiB read at 0 comes as 128 chunks, one every 10 ms (~1.3 s);
    // the reads sent after it are answered after it, at once.
    let queue = Promise.resolve();
    const path = await serve((req, s) => {
      queue = queue.then(() => (offsetOf(req) === 0 ? trickleRead(s, req, 10) : void s.write(wholeReply(req, 0x44))));
    });
    const c = await NbdClient.connect({ path, requestTimeoutMs: TIMEOUT });
    const started = performance.now();
    const older = c.read(0, 512 * KiB);
    const behind = Array.from({ length: 4 }, (_, i) => c.read(MiB + i * 4096, 4096));
    expect((await older).equals(Buffer.alloc(512 * KiB, 0x5a))).toBe(true); // the test's timeout is the bound
    for (const r of await Promise.all(behind)) expect(r.equals(Buffer.alloc(4096, 0x44))).toBe(true);
    expect(performance.now() - started).toBeGreaterThan(3 * TIMEOUT);
    await c.disconnect();
  });
});

describe('NbdClient per-request bound (requestTimeoutMs) and error chunks', () => {
  /** An ERROR_OFFSET chunk (not the last) of the reply to `req`, with EINVAL, at the request's offset plus `at`. */
  const errorAt = (req: Buffer, at = 0): Buffer => chunk(req, 0, ERROR_OFFSET, errorBody(EINVAL, 'bad sector', offsetOf(req) + at));

  /** Sends ERROR_OFFSET chunks of the reply to `req`, never the last, one every `everyMs`, until the socket is gone. */
  async function errorsForever(s: net.Socket, req: Buffer, everyMs: number): Promise<void> {
    while (!s.destroyed) {
      s.write(errorAt(req));
      await sleep(everyMs);
    }
  }

  // A server that answers a read with error chunks forever: bytes never stop, and before, every
  // chunk restarted the request's clock, so the read never failed.
  const forever: Array<[string, (c: NbdClient) => { target: Promise<unknown>; others: Array<Promise<unknown>> }]> = [
    ['the only request in flight', (c) => ({ target: quiet(c.read(MiB, 4096)), others: [] })],
    ['a request sent behind an older one that is never answered', (c) => {
      const older = quiet(c.read(0, 4096));
      return { target: quiet(c.read(MiB, 4096)), others: [older] };
    }],
  ];

  it.each(forever)('read() of %s, whose reply is ERROR_OFFSET chunks every 20 ms without end, fails with UNAVAILABLE about requestTimeoutMs after the first, as does every request in flight', async (_what, start) => {
    const path = await serve((req, s) => {
      if (offsetOf(req) === MiB) void errorsForever(s, req, 20);
    });
    const c = await NbdClient.connect({ path, requestTimeoutMs: TIMEOUT });
    const started = performance.now();
    const { target, others } = start(c);
    // Awaited without a wall-clock bound (the test's timeout is the bound): error chunks never
    // stop, so only their not restarting the clock can fail it, as its message says.
    await expect(target).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('got only further error chunks') });
    expect(performance.now() - started).toBeGreaterThanOrEqual(TIMEOUT - 10);
    for (const o of others) await expect(o).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(c.read(2 * MiB, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('read() of a reply of two ERROR_OFFSET chunks 100 ms apart and then NONE with DONE fails with the first error, and the connection stays up', async () => {
    const path = await serve((req, s) => {
      if (offsetOf(req) !== 0) return void s.write(wholeReply(req, 0x11));
      void (async () => {
        s.write(errorAt(req));
        await sleep(100);
        s.write(errorAt(req, 512));
        await sleep(100);
        s.write(chunk(req, DONE, NONE, Buffer.alloc(0)));
      })();
    });
    const c = await NbdClient.connect({ path, requestTimeoutMs: TIMEOUT });
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { nbdError: EINVAL } });
    expect((await c.read(MiB, 4096)).equals(Buffer.alloc(4096, 0x11))).toBe(true);
    await c.disconnect();
  });

  it('read() of a reply alternating OFFSET_DATA and ERROR_OFFSET chunks for several requestTimeoutMs, data every 100 ms, fails with the first error, and the connection stays up', async () => {
    // 16 data chunks of 4 KiB, each followed 50 ms later by an error offset inside it: ~1.6 s in all.
    const path = await serve((req, s) => {
      if (offsetOf(req) !== 0) return void s.write(wholeReply(req, 0x11));
      void (async () => {
        for (let at = 0; at < lengthOf(req) && !s.destroyed; at += 4 * KiB) {
          s.write(chunk(req, 0, OFFSET_DATA, offsetData(at, Buffer.alloc(4 * KiB, 0x5a))));
          await sleep(50);
          s.write(errorAt(req, at));
          await sleep(50);
        }
        if (!s.destroyed) s.write(chunk(req, DONE, NONE, Buffer.alloc(0)));
      })();
    });
    const c = await NbdClient.connect({ path, requestTimeoutMs: TIMEOUT });
    const started = performance.now();
    await expect(c.read(0, 64 * KiB)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(performance.now() - started).toBeGreaterThan(3 * TIMEOUT);
    expect((await c.read(MiB, 4096)).equals(Buffer.alloc(4096, 0x11))).toBe(true);
    await c.disconnect();
  });
});
