// NbdServer resource limits: the write-payload and read-reply budgets of a connection
// (maxWriteBytesPerConnection, maxReadBytesPerConnection), the number of clients served at once
// (maxConnections), refused within the protocol, and what frees a slot held by a silent client
// (idleTimeoutMs, TCP keepalive).
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { NbdClient, NbdServer, type NbdBackend, type NbdServerOptions } from '../src/index.js';
import { run, tempDir } from './helpers/peers.js';
import { BLOCK_STATUS, DONE, RawSocket, flaggedRequest, rawGo, rawStructuredGo, readChunk, request, simpleReply } from './helpers/raw-nbd.js';

const MiB = 1024 * 1024;
const READ = 0;
const WRITE = 1;
let dir: { path: string; remove: () => Promise<void> };
let n = 0;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  dir = await tempDir('nbd-lim-');
});
afterAll(async () => {
  await dir?.remove();
});

async function serve(backend: NbdBackend, options: Partial<NbdServerOptions>): Promise<{ server: NbdServer; path: string }> {
  const server = new NbdServer({ exports: [{ name: 'x', backend }], ...options });
  const path = join(dir.path, `l${++n}.sock`);
  await server.listen({ path });
  return { server, path };
}

/** A writable backend whose writes wait until `release()`; counts writes started and running. */
function gatedBackend(size: number): NbdBackend & { bytes: Buffer; started: number; running: number; peak: number; release: () => void } {
  const waiting: Array<() => void> = [];
  let open = false;
  const b = {
    bytes: Buffer.alloc(size),
    size,
    started: 0,
    running: 0,
    peak: 0,
    release: () => {
      open = true;
      for (const w of waiting.splice(0)) w();
    },
    async read(o: number, len: number) {
      return Buffer.from(b.bytes.subarray(o, o + len));
    },
    async write(o: number, data: Buffer) {
      b.started++;
      b.peak = Math.max(b.peak, ++b.running);
      if (!open) await new Promise<void>((r) => waiting.push(r));
      data.copy(b.bytes, o);
      b.running--;
    },
  };
  return b;
}

describe('NbdServer write-payload budget per connection', () => {
  it('a client pipelining writes to a slow backend makes the server hold no more than maxWriteBytesPerConnection of payloads', async () => {
    const backend = gatedBackend(64 * MiB);
    const { server, path } = await serve(backend, { maxWriteBytesPerConnection: 4 * MiB, maxInFlightPerConnection: 32 });
    const { raw } = await rawGo(path, 'x');
    const N = 16;
    const payloads = Array.from({ length: N }, (_, i) => Buffer.alloc(MiB, i + 1));
    // Send everything without waiting; the server must stop reading instead of buffering it all.
    void (async () => {
      for (let i = 0; i < N; i++) {
        if (!raw.socket.write(request(WRITE, i + 1, i * MiB, MiB, payloads[i]))) await new Promise((r) => raw.socket.once('drain', r));
      }
    })();
    await vi.waitFor(() => expect(backend.started).toBeGreaterThanOrEqual(4), { timeout: 20_000, interval: 20 });
    await sleep(300);
    // Four 1 MiB payloads fill the 4 MiB budget: the fifth is not even read (maxInFlight alone allows 16).
    expect(backend.started).toBe(4);
    backend.release();
    const cookies = new Set<number>();
    for (let i = 0; i < N; i++) {
      const r = await simpleReply(raw);
      expect(r.errno).toBe(0);
      cookies.add(r.cookie);
    }
    expect(cookies.size).toBe(N);
    for (let i = 0; i < N; i++) expect(backend.bytes.subarray(i * MiB, (i + 1) * MiB).equals(payloads[i]!)).toBe(true);
    raw.socket.destroy();
    await server.close();
  });

  it('a write larger than the budget still goes through when no other write is held', async () => {
    const backend = gatedBackend(16 * MiB);
    backend.release();
    const { server, path } = await serve(backend, { maxWriteBytesPerConnection: MiB });
    const c = await NbdClient.connect({ path, exportName: 'x' });
    const data = Buffer.alloc(8 * MiB, 0x5a);
    await Promise.all([c.write(0, data), c.write(8 * MiB, Buffer.alloc(4096, 1)), c.write(12 * MiB, data.subarray(0, 3 * MiB))]);
    expect((await c.read(0, 8 * MiB)).equals(data)).toBe(true);
    expect(backend.peak).toBe(1); // each write waited for the previous one to settle
    await c.disconnect();
    await server.close();
  });
});

describe('NbdServer read-reply budget per connection', () => {
  it('a client pipelining large READs and reading no reply makes the server start no more than maxReadBytesPerConnection of them', async () => {
    const data = Buffer.alloc(4 * MiB, 0x3c);
    let started = 0;
    const backend: NbdBackend = {
      size: 64 * MiB,
      async read(_o, len) {
        started++;
        return data.subarray(0, len); // no copy: what counts is how many replies the server produced
      },
    };
    const { server, path } = await serve(backend, { maxReadBytesPerConnection: 8 * MiB, maxInFlightPerConnection: 32 });
    const { raw } = await rawGo(path, 'x');
    raw.socket.pause(); // read no reply: none can leave the server's write buffer
    const N = 16;
    raw.write(Buffer.concat(Array.from({ length: N }, (_, i) => request(READ, i + 1, i * 4 * MiB, 4 * MiB))));
    await vi.waitFor(() => expect(started).toBeGreaterThanOrEqual(2), { timeout: 20_000, interval: 10 });
    await sleep(300); // a server without the budget would start more from the same packet
    // Two 4 MiB replies fill the 8 MiB budget: the third read waits (maxInFlight alone allows 16).
    expect(started).toBe(2);
    // Reading the replies lets the rest start, in order, each once an earlier reply left.
    raw.socket.resume();
    for (let i = 0; i < N; i++) {
      const r = await simpleReply(raw);
      expect(r).toEqual({ errno: 0, cookie: i + 1 });
      expect((await raw.read(4 * MiB)).equals(data)).toBe(true);
    }
    expect(started).toBe(N);
    raw.socket.destroy();
    await server.close();
  });

  it('a READ larger than the budget is served when no other is held, and failed READs give their budget back', async () => {
    const bytes = Buffer.alloc(16 * MiB);
    for (let i = 0; i < bytes.length; i += 4096) bytes.writeUInt32BE(i, i);
    const backend: NbdBackend = { size: bytes.length, read: async (o, len) => Buffer.from(bytes.subarray(o, o + len)) };
    const { server, path } = await serve(backend, { maxReadBytesPerConnection: MiB });
    const { raw } = await rawGo(path, 'x');
    // 8 MiB reads (8 × the budget), with reads past the end (EINVAL) between them, all pipelined.
    const reqs: Array<[number, number]> = [
      [0, 8 * MiB],
      [16 * MiB, MiB],
      [8 * MiB, 8 * MiB],
      [15 * MiB, 2 * MiB],
      [4 * MiB, 8 * MiB],
    ];
    raw.write(Buffer.concat(reqs.map(([offset, length], i) => request(READ, i + 1, offset, length))));
    for (let i = 0; i < reqs.length; i++) {
      const [offset, length] = reqs[i]!;
      const r = await simpleReply(raw);
      expect(r.cookie).toBe(i + 1); // one at a time: each waited for the previous reply to leave
      if (offset + length > bytes.length) {
        expect(r.errno).toBe(22);
        continue;
      }
      expect(r.errno).toBe(0);
      expect((await raw.read(length)).equals(bytes.subarray(offset, offset + length))).toBe(true);
    }
    const c = await NbdClient.connect({ path, exportName: 'x' });
    const all = await Promise.all([c.read(0, 8 * MiB), c.read(8 * MiB, 8 * MiB)]);
    expect(Buffer.concat(all).equals(bytes)).toBe(true);
    await c.disconnect();
    raw.socket.destroy();
    await server.close();
  });
});

/**
 * A `base:allocation` as fragmented as it gets at 512 bytes: descriptors alternate data (0) and
 * hole+zero (3) every 512 bytes. Counts the calls started.
 */
function fragmentedBackend(size: number): NbdBackend & { started: number } {
  const b = {
    size,
    started: 0,
    read: async (_o: number, len: number) => [{ zero: len }],
    async blockStatus(_context: string, o: number, len: number) {
      b.started++;
      const out: Array<{ length: number; flags: number }> = [];
      for (let at = o; at < o + len; ) {
        const to = Math.min(o + len, (Math.floor(at / 512) + 1) * 512);
        out.push({ length: to - at, flags: Math.floor(at / 512) % 2 === 0 ? 0 : 3 });
        at = to;
      }
      return out;
    },
  };
  return b;
}

/** The descriptors of one BLOCK_STATUS chunk as [length, flags]. */
function descriptorsOf(body: Buffer): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let i = 4; i < body.length; i += 8) out.push([body.readUInt32BE(i), body.readUInt32BE(i + 4)]);
  return out;
}

describe('NbdServer block status replies', () => {
  it('a client pipelining BLOCK_STATUS of a fragmented export and reading no reply makes the server start no more than maxReadBytesPerConnection of replies', async () => {
    const backend = fragmentedBackend(64 * MiB);
    const { server, path } = await serve(backend, { maxReadBytesPerConnection: 2 * MiB, maxInFlightPerConnection: 32 });
    const { raw } = await rawStructuredGo(path, 'x', ['base:allocation']);
    raw.socket.pause(); // read no reply: none can leave the server's write buffer
    const N = 16;
    raw.write(Buffer.concat(Array.from({ length: N }, (_, i) => flaggedRequest(7, 0, i + 1, 0, 32 * MiB))));
    await vi.waitFor(() => expect(backend.started).toBeGreaterThanOrEqual(3), { timeout: 20_000, interval: 10 });
    await sleep(300); // a server without the budget would start more from the same packet
    // Each reply is 65536 descriptors (512 KiB + 24 bytes): three fit in 2 MiB, the fourth waits
    // (maxInFlight alone allows 16; unbounded, the server held 16 of them).
    expect(backend.started).toBe(3);
    raw.socket.resume();
    const cookies = new Set<number>();
    for (let i = 0; i < N; i++) {
      const c = await readChunk(raw);
      expect(c).toMatchObject({ type: BLOCK_STATUS, flags: DONE });
      const descs = descriptorsOf(c.body);
      expect(descs.length).toBe(65536);
      expect(descs.every(([length, flags], j) => length === 512 && flags === (j % 2 === 0 ? 0 : 3))).toBe(true);
      cookies.add(c.cookie);
    }
    expect(cookies.size).toBe(N);
    expect(backend.started).toBe(N);
    raw.socket.destroy();
    await server.close();
  });

  it('one BLOCK_STATUS reply carries at most 65536 descriptors per context; the rest is asked from where it stopped', async () => {
    const backend = fragmentedBackend(64 * MiB);
    const { server, path } = await serve(backend, {});
    const { raw } = await rawStructuredGo(path, 'x', ['base:allocation']);
    // 64 MiB at 512 bytes a descriptor would be 131072 descriptors (1 MiB of reply).
    raw.write(flaggedRequest(7, 0, 1, 0, 64 * MiB));
    const first = descriptorsOf((await readChunk(raw)).body);
    expect(first.length).toBe(65536);
    expect(first.every(([length, flags], j) => length === 512 && flags === (j % 2 === 0 ? 0 : 3))).toBe(true);
    raw.write(flaggedRequest(7, 0, 2, 32 * MiB, 32 * MiB));
    const rest = descriptorsOf((await readChunk(raw)).body);
    expect(rest.length).toBe(65536);
    expect(rest[0]).toEqual([512, 0]);
    raw.socket.destroy();
    // A client that follows up (NbdClient.mapExtents) gets the whole map.
    const c = await NbdClient.connect({ path, exportName: 'x', metaContexts: ['base:allocation'] });
    const map = await c.mapExtents('base:allocation');
    expect(map.length).toBe(131072);
    expect(map[131071]).toEqual({ offset: 64 * MiB - 512, length: 512, flags: 3 });
    await c.disconnect();
    await server.close();
  });
});

describe('NbdServer limit options', () => {
  const backend: NbdBackend = { size: MiB, read: async (_o, len) => [{ zero: len }] };
  const nonsense: Array<Partial<NbdServerOptions>> = [
    { maxInFlightPerConnection: 0 }, // would never take a request
    { handshakeTimeoutMs: 0 }, // would drop every client at once
    { handshakeTimeoutMs: 2 ** 31 }, // past node's longest timer: would fire at once
    { maxConnections: 2.5 },
    { maxWriteBytesPerConnection: Number.POSITIVE_INFINITY },
    { maxReadBytesPerConnection: -1 },
    { idleTimeoutMs: Number.NaN }, // would never fire
    { idleTimeoutMs: -1 },
    { idleTimeoutMs: 2 ** 31 }, // past node's longest timer: would fire at once
  ];

  it.each(nonsense)('new NbdServer(%o) is INVALID_INPUT', (options) => {
    expect(() => new NbdServer({ exports: [{ name: 'x', backend }], ...options })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
  });
});

describe('NbdServer maxConnections', () => {
  const backend: NbdBackend = { size: MiB, read: async (_o, len) => [{ zero: len }] };

  it('a client over the limit is refused with NBD_REP_ERR_POLICY "too many connections"; once one leaves, the next is served', async () => {
    const { server, path } = await serve(backend, { maxConnections: 2 });
    const a = await NbdClient.connect({ path, exportName: 'x' });
    const b = await NbdClient.connect({ path, exportName: 'x' });
    const refused = await NbdClient.connect({ path, exportName: 'x' }).then(
      () => 'connected',
      (e: Error) => e.message,
    );
    expect(refused).toMatch(/too many connections/);
    expect(server.connectionCount).toBe(2);
    const info = await run('nbdinfo', [`nbd+unix:///x?socket=${path}`]);
    expect(info.code).not.toBe(0);
    expect(info.stderr).toMatch(/server replied with error to opt_go/); // our message shows only with LIBNBD_DEBUG=1
    await a.disconnect();
    const c = await NbdClient.connect({ path, exportName: 'x' });
    expect((await c.read(0, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    await Promise.all([b.disconnect(), c.disconnect()]);
    await server.close();
    expect(server.connectionCount).toBe(0);
  });

  it('refused clients that stall are dropped, and past maxConnections of them new connections are closed before the greeting', async () => {
    const { server, path } = await serve(backend, { maxConnections: 1 });
    const served = await NbdClient.connect({ path, exportName: 'x' });
    const stalled = await RawSocket.connect(path); // refused; reads the greeting, then says nothing
    expect((await stalled.read(18)).subarray(0, 8).toString()).toBe('NBDMAGIC');
    const extra = await RawSocket.connect(path);
    await extra.closed; // closed at once: the one refused slot is taken
    expect(extra.pending).toBe(0);
    // Dropped by the server (refused connections get at most 2 s; 20 s tells that from never).
    const dropped = await Promise.race([stalled.closed.then(() => true), sleep(20_000).then(() => false)]);
    expect(dropped, 'the stalled refused client was never dropped').toBe(true);
    expect((await served.read(0, 512)).length).toBe(512);
    await served.disconnect();
    await server.close();
  });
});

describe('NbdServer idleTimeoutMs and TCP keepalive', () => {
  /** A backend whose reads wait until `release()`. */
  function gatedReads(): NbdBackend & { release: () => void; started: number } {
    const waiting: Array<() => void> = [];
    const b = {
      size: MiB,
      started: 0,
      release: () => {
        for (const w of waiting.splice(0)) w();
      },
      async read(_o: number, len: number) {
        b.started++;
        await new Promise<void>((r) => waiting.push(r));
        return Buffer.alloc(len, 7);
      },
    };
    return b;
  }

  it('a client that goes quiet after the handshake is disconnected after idleTimeoutMs, freeing its slot', async () => {
    const backend: NbdBackend = { size: MiB, read: async (_o, len) => Buffer.alloc(len, 1) };
    // 1 s: the server must not find the client idle between the handshake and its request (this
    // process runs both ends, so a pause of the process counts as the client's silence).
    const { server, path } = await serve(backend, { idleTimeoutMs: 1_000, maxConnections: 1 });
    const { raw } = await rawGo(path, 'x');
    raw.write(request(READ, 1, 0, 512));
    expect(await simpleReply(raw)).toEqual({ errno: 0, cookie: 1 });
    await raw.read(512);
    expect(server.connectionCount).toBe(1);
    await raw.closed; // quiet from here on: the server hangs up
    while (server.connectionCount > 0) await sleep(10); // its side closes as the client sees it
    // The slot is free again: with maxConnections 1 the next client is served.
    const c = await NbdClient.connect({ path, exportName: 'x' });
    expect((await c.read(0, 512)).equals(Buffer.alloc(512, 1))).toBe(true);
    await c.disconnect();
    await server.close();
  });

  it('a connection with a request in flight is not cut by idleTimeoutMs, however long the backend takes', async () => {
    const backend = gatedReads();
    const { server, path } = await serve(backend, { idleTimeoutMs: 1_000 });
    const { raw } = await rawGo(path, 'x');
    raw.write(request(READ, 1, 0, 4096));
    await vi.waitFor(() => expect(backend.started).toBe(1), { timeout: 20_000, interval: 10 });
    await sleep(3_000); // three idle periods with the read held by the backend
    expect(backend.started).toBe(1);
    expect(server.connectionCount).toBe(1);
    backend.release();
    expect(await simpleReply(raw)).toEqual({ errno: 0, cookie: 1 });
    expect((await raw.read(4096)).equals(Buffer.alloc(4096, 7))).toBe(true);
    await raw.closed; // then quiet: idle
    await server.close();
  });

  it('idleTimeoutMs 0 keeps a silent client', async () => {
    const backend: NbdBackend = { size: MiB, read: async (_o, len) => Buffer.alloc(len) };
    const { server, path } = await serve(backend, { idleTimeoutMs: 0 });
    const { raw } = await rawGo(path, 'x');
    await sleep(500);
    expect(server.connectionCount).toBe(1);
    raw.write(request(READ, 1, 0, 512));
    expect(await simpleReply(raw)).toEqual({ errno: 0, cookie: 1 });
    raw.socket.destroy();
    await server.close();
  });

  it('accepted TCP connections have keepalive on (ss shows the keepalive timer)', async () => {
    const backend: NbdBackend = { size: MiB, read: async (_o, len) => Buffer.alloc(len) };
    const server = new NbdServer({ exports: [{ name: 'x', backend }] });
    const bound = (await server.listen({ host: '127.0.0.1', port: 0 })) as { port: number };
    const c = await NbdClient.connect({ host: '127.0.0.1', port: bound.port, exportName: 'x' });
    try {
      const out = await run('ss', ['-tnoH', 'state', 'established', `( sport = :${bound.port} )`]);
      expect(out.code).toBe(0);
      expect(out.stdout.trim().split('\n')).toHaveLength(1); // the server's side of the one connection
      expect(out.stdout).toMatch(/timer:\(keepalive,/);
    } finally {
      await c.disconnect();
      await server.close();
    }
  });
});
