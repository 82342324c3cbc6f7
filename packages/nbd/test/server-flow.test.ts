// Server flow control, spoken in raw bytes: how much a client can make one connection start,
// queue or buffer — during transmission, during the handshake, and after a failed handshake.
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { NbdServer, type NbdBackend } from '../src/index.js';
import { ByteReader } from '../src/byte-reader.js';
import { ServerConnection } from '../src/server-connection.js';
import { tempDir } from './helpers/peers.js';
import { RawSocket, rawGo, request, simpleReply } from './helpers/raw-nbd.js';

const MiB = 1024 * 1024;
let dir: { path: string; remove: () => Promise<void> };
let n = 0;
const sockPath = (): string => join(dir.path, `f${++n}.sock`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  dir = await tempDir('nbd-flow-');
});
afterAll(async () => {
  await dir?.remove();
});
afterEach(() => {
  vi.restoreAllMocks();
});

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

/** One client option frame. */
function option(type: number, data = Buffer.alloc(0), magic = 'IHAVEOPT'): Buffer {
  return Buffer.concat([Buffer.from(magic), u32(type), u32(data.length), data]);
}

/** Resolves true once `p` settles, false after `ms`. */
function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([p.then(() => true), sleep(ms).then(() => false)]);
}

async function serve(backend: NbdBackend, maxInFlightPerConnection: number): Promise<{ server: NbdServer; path: string }> {
  const server = new NbdServer({ exports: [{ name: 'x', backend }], maxInFlightPerConnection });
  const path = sockPath();
  await server.listen({ path });
  return { server, path };
}

describe('NbdServer transmission flow control', () => {
  it('requests arriving in one packet start no more than maxInFlightPerConnection at once, and all are answered', async () => {
    let started = 0;
    let active = 0;
    let peak = 0;
    const waiting: Array<() => void> = [];
    const backend: NbdBackend = {
      size: 64 * MiB,
      async read(_o, len) {
        started++;
        peak = Math.max(peak, ++active);
        await new Promise<void>((r) => waiting.push(r));
        active--;
        return [{ zero: len }];
      },
    };
    const { server, path } = await serve(backend, 4);
    const { raw } = await rawGo(path, 'x');
    const N = 200;
    raw.write(Buffer.concat(Array.from({ length: N }, (_, i) => request(0, i + 1, 0, 4096))));
    await vi.waitFor(() => expect(started).toBeGreaterThanOrEqual(4), { timeout: 20_000, interval: 10 });
    await sleep(200); // a server without the limit would have started the rest with the first 4 (one packet)
    expect(started).toBe(4);
    // Let them finish a few at a time: parsing resumes from the bytes kept buffered.
    const cookies = new Set<number>();
    while (cookies.size < N) {
      for (const w of waiting.splice(0)) w();
      const r = await simpleReply(raw);
      expect(r.errno).toBe(0);
      await raw.read(4096);
      cookies.add(r.cookie);
    }
    expect(started).toBe(N);
    expect(peak).toBe(4);
    raw.socket.destroy();
    await server.close();
  });

  it('a client that sends many READs and reads no reply makes the server start only maxInFlightPerConnection of them', async () => {
    const data = Buffer.alloc(MiB, 7);
    let started = 0;
    const backend: NbdBackend = {
      size: 64 * MiB,
      async read() {
        started++;
        return data; // no copy: what counts is how many replies the server produced
      },
    };
    const { server, path } = await serve(backend, 4);
    const { raw } = await rawGo(path, 'x');
    raw.socket.pause(); // read nothing
    const N = 64;
    raw.write(Buffer.concat(Array.from({ length: N }, (_, i) => request(0, i + 1, 0, MiB))));
    await sleep(300);
    // The first 4 replies fill the socket (1 MiB each, far above its high-water mark): nothing more starts.
    expect(started).toBeLessThanOrEqual(8);
    raw.socket.resume();
    for (let i = 0; i < N; i++) {
      expect((await simpleReply(raw)).errno).toBe(0);
      await raw.read(MiB);
    }
    expect(started).toBe(N);
    raw.socket.destroy();
    await server.close();
  });
});

describe('NbdServer ending a connection (proto.md: NBD_CMD_DISC answers every outstanding request first)', () => {
  const slowBackend = (): NbdBackend => ({
    size: 64 * MiB,
    async read(_o, len) {
      await sleep(100);
      return Buffer.alloc(len, 9);
    },
  });
  const cases: Array<[string, { disc: boolean; n: number }]> = [
    ['NBD_CMD_DISC then FIN', { disc: true, n: 3 }],
    ['FIN without NBD_CMD_DISC', { disc: false, n: 3 }],
    ['NBD_CMD_DISC then FIN, more requests than maxInFlightPerConnection', { disc: true, n: 12 }],
  ];
  it.each(cases)('requests in flight at %s are all answered before the server closes', async (_what, { disc, n }) => {
    const { server, path } = await serve(slowBackend(), 4);
    const { raw } = await rawGo(path, 'x');
    const frames = Array.from({ length: n }, (_, i) => request(0, i + 1, 0, 4096));
    if (disc) frames.push(request(2, n + 1, 0, 0));
    raw.write(Buffer.concat(frames));
    raw.socket.end(); // FIN right away, as clients commonly do after NBD_CMD_DISC
    const cookies: number[] = [];
    for (let i = 0; i < n; i++) {
      const r = await simpleReply(raw);
      expect(r.errno).toBe(0);
      expect((await raw.read(4096)).equals(Buffer.alloc(4096, 9))).toBe(true);
      cookies.push(r.cookie);
    }
    expect(cookies.sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(await settlesWithin(raw.closed, 20_000)).toBe(true);
    expect(raw.pending).toBe(0);
    await server.close();
    expect(server.connectionCount).toBe(0);
  });
});

describe('NbdServer after a failed handshake', () => {
  const cases: Array<[string, (raw: RawSocket) => Promise<void>]> = [
    ['unknown client flags', async (raw) => raw.write(u32(0xffffffff))],
    [
      'a bad option magic',
      async (raw) => {
        raw.write(u32(3));
        raw.write(option(3, Buffer.alloc(0), 'IHAVEOPX'));
      },
    ],
    [
      'NBD_OPT_ABORT (the ACK still arrives)',
      async (raw) => {
        raw.write(u32(3));
        raw.write(option(2));
        const ack = await raw.read(20);
        expect([ack.readUInt32BE(8), ack.readUInt32BE(12)]).toEqual([2, 1]);
      },
    ],
    [
      'an unknown NBD_OPT_EXPORT_NAME',
      async (raw) => {
        raw.write(u32(3));
        raw.write(option(1, Buffer.from('nope')));
      },
    ],
  ];

  it.each(cases)('after %s the server buffers nothing more and closes even if the client keeps sending', async (_what, fail) => {
    const backend: NbdBackend = { size: MiB, read: async (_o, len) => [{ zero: len }] };
    const { server, path } = await serve(backend, 4);
    const raw = await RawSocket.connect(path, true); // a client that never hangs up
    // The server ends its side once it has given up (rejected: all it reads from then on is discarded).
    const serverEnded = new Promise<void>((r) => raw.socket.once('end', () => r()));
    await raw.read(18);
    await fail(raw);
    expect(await settlesWithin(serverEnded, 20_000), 'the server never gave up on the handshake').toBe(true);
    // From now on count what still reaches a handshake ByteReader.
    let pushed = 0;
    const push = ByteReader.prototype.push;
    vi.spyOn(ByteReader.prototype, 'push').mockImplementation(function (this: ByteReader, chunk: Buffer) {
      pushed += chunk.length;
      push.call(this, chunk);
    });
    const junk = Buffer.alloc(256 * 1024, 0x41);
    let flooding = true;
    void (async () => {
      while (flooding && !raw.socket.destroyed) {
        // One 'drain' listener per wait (removed when it fires); the close is raced, not listened
        // for again on every wait (that piled up 'close' listeners on the socket).
        if (!raw.socket.write(junk)) await Promise.race([new Promise((r) => raw.socket.once('drain', r)), raw.closed]);
      }
    })();
    const closed = await settlesWithin(raw.closed, 20_000); // destroyed after REJECT_GRACE_MS (1 s)
    flooding = false;
    raw.socket.destroy();
    expect(closed).toBe(true);
    expect(pushed).toBe(0);
    await server.close({ drainTimeoutMs: 100 });
    expect(server.connectionCount).toBe(0);
  });
});

describe('NbdServer handshake flow control', () => {
  it('a client that sends options and reads no reply makes the server queue at most about one socket buffer of replies', async () => {
    const backend: NbdBackend = { size: MiB, read: async (_o, len) => [{ zero: len }] };
    const conns: ServerConnection[] = [];
    const srv = net.createServer((socket) => {
      conns.push(
        new ServerConnection(socket, {
          exports: new Map([['x', { name: 'x', backend }]]),
          blockSizes: { min: 1, preferred: 4096, max: 32 * MiB },
          maxInFlight: 4,
          handshakeTimeoutMs: 30_000,
          idleTimeoutMs: 0,
          maxWriteBytes: 64 * MiB,
          maxReadBytes: 64 * MiB,
          refusal: () => undefined,
          driver: 'test',
        }),
      );
    });
    const path = sockPath();
    await new Promise<void>((r) => srv.listen(path, r));
    const raw = await RawSocket.connect(path);
    await raw.read(18);
    raw.socket.pause(); // read no reply
    const N = 20_000; // NBD_OPT_LIST: 45 bytes of replies each
    raw.write(Buffer.concat([u32(3), ...Array.from({ length: N }, () => option(3))]));
    await sleep(500);
    const conn = conns[0]!;
    expect(conn.socket.writableLength).toBeLessThan(64 * 1024);
    // Reading the replies lets the handshake go on: every option is answered.
    raw.socket.resume();
    for (let i = 0; i < N; i++) {
      const server = await raw.read(20);
      expect(server.readUInt32BE(12)).toBe(2);
      await raw.read(server.readUInt32BE(16));
      const ack = await raw.read(20);
      expect(ack.readUInt32BE(12)).toBe(1);
    }
    raw.socket.destroy();
    await conn.closed();
    await new Promise((r) => srv.close(r));
  });
});
