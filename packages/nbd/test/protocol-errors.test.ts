// Protocol violations, error mapping, connection loss and draining, on both sides of the wire.
import net from 'node:net';
import { join } from 'node:path';
import { CairnError } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InFlightWindow, NbdClient, NbdServer, nbdErrorCode, toNbdErrno, type NbdBackend } from '../src/index.js';
import { pattern, tempDir } from './helpers/peers.js';
import { fakeServer, rawGo, request, simpleReply } from './helpers/raw-nbd.js';

const MiB = 1024 * 1024;
let dir: { path: string; remove: () => Promise<void> };
let n = 0;
const sockPath = (): string => join(dir.path, `s${++n}.sock`);

beforeAll(async () => {
  dir = await tempDir('nbd-err-');
});
afterAll(async () => {
  await dir?.remove();
});

function listen(server: net.Server): Promise<string> {
  const path = sockPath();
  return new Promise((resolve) => server.listen(path, () => resolve(path)));
}

/** A writable in-memory backend: first half data, second half reported as a zero run. */
function memoryBackend(size: number): NbdBackend & { bytes: Buffer } {
  const bytes = Buffer.alloc(size);
  pattern(size / 2, 5).copy(bytes);
  return {
    bytes,
    size,
    async read(o, len) {
      const half = size / 2;
      if (o >= half) return [{ zero: len }];
      if (o + len <= half) return Buffer.from(bytes.subarray(o, o + len));
      return [Buffer.from(bytes.subarray(o, half)), { zero: o + len - half }];
    },
    async write(o, data) {
      data.copy(bytes, o);
    },
  };
}

async function serve(backend: NbdBackend, name = 'x'): Promise<{ server: NbdServer; path: string }> {
  const server = new NbdServer({ exports: [{ name, backend }] });
  const path = sockPath();
  await server.listen({ path });
  return { server, path };
}

describe('NbdClient protocol errors', () => {
  it('connect() to a peer that is not an NBD server fails with CORRUPT', async () => {
    const path = await listen(net.createServer((s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n')));
    await expect(NbdClient.connect({ path })).rejects.toMatchObject({ code: 'CORRUPT' });
  });

  it('connect() where nothing listens fails with UNAVAILABLE', async () => {
    await expect(NbdClient.connect({ path: join(dir.path, 'nobody.sock') })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('a reply with a bad magic fails every request in flight with CORRUPT, later ones with UNAVAILABLE', async () => {
    const path = await listen(
      fakeServer(MiB, async (s, raw) => {
        await raw.read(2 * 28);
        s.write(Buffer.alloc(16, 0xee));
      }),
    );
    const c = await NbdClient.connect({ path });
    expect(c.structuredReplies).toBe(false);
    const reads = [c.read(0, 4096), c.read(4096, 4096)];
    for (const r of reads) await expect(r).rejects.toMatchObject({ code: 'CORRUPT' });
    await expect(c.read(0, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('connect() falls back to NBD_OPT_EXPORT_NAME when the server refuses NBD_OPT_GO, and reads through simple replies', async () => {
    const bytes = pattern(MiB, 11);
    const path = await listen(
      fakeServer(
        MiB,
        async (s, raw) => {
          for (;;) {
            const req = await raw.read(28);
            const offset = Number(req.readBigUInt64BE(16));
            const length = req.readUInt32BE(24);
            const reply = Buffer.alloc(16);
            reply.writeUInt32BE(0x67446698, 0);
            req.copy(reply, 8, 8, 16);
            s.write(Buffer.concat([reply, bytes.subarray(offset, offset + length)]));
          }
        },
        { exportNameOnly: true },
      ),
    );
    const c = await NbdClient.connect({ path, exportName: 'any' });
    expect(c.size).toBe(MiB);
    expect(c.structuredReplies).toBe(false);
    const [a, b] = await Promise.all([c.read(0, 300_000), c.read(300_000, MiB - 300_000)]);
    expect(Buffer.concat([a, b]).equals(bytes)).toBe(true);
  });

  it('connection loss fails requests in flight and those waiting for the window with UNAVAILABLE', async () => {
    const hanging: NbdBackend = { size: MiB, read: () => new Promise(() => undefined) };
    const { server, path } = await serve(hanging);
    const c = await NbdClient.connect({ path, exportName: 'x', maxInFlight: 4 });
    const reads = Promise.allSettled(Array.from({ length: 6 }, (_, i) => c.read(i * 4096, 4096)));
    await new Promise((r) => setTimeout(r, 50));
    expect(c.inFlight).toBe(4);
    await server.close({ drainTimeoutMs: 20 });
    const settled = await reads;
    expect(settled.map((s) => (s.status === 'rejected' ? (s.reason as CairnError).code : 'fulfilled'))).toEqual(Array(6).fill('UNAVAILABLE'));
  });

  it('connect() to an unknown export of our server fails with NOT_FOUND', async () => {
    const { server, path } = await serve(memoryBackend(MiB));
    await expect(NbdClient.connect({ path, exportName: 'other' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await server.close();
  });
});

describe('NbdServer protocol errors', () => {
  it('an oversize READ gets EINVAL and the connection keeps working', async () => {
    const backend = memoryBackend(64 * MiB);
    const { server, path } = await serve(backend);
    const { raw, size } = await rawGo(path, 'x');
    expect(size).toBe(64 * MiB);
    raw.write(request(0, 7, 0, 33 * MiB));
    expect(await simpleReply(raw)).toEqual({ errno: 22, cookie: 7 });
    raw.write(request(0, 8, 0, 512));
    expect(await simpleReply(raw)).toEqual({ errno: 0, cookie: 8 });
    expect((await raw.read(512)).equals(backend.bytes.subarray(0, 512))).toBe(true);
    raw.socket.destroy();
    await server.close();
  });

  it('READ past the end gets EINVAL, WRITE past the end ENOSPC, an unknown command EINVAL', async () => {
    const { server, path } = await serve(memoryBackend(MiB));
    const { raw } = await rawGo(path, 'x');
    raw.write(request(0, 1, MiB - 512, 1024));
    expect(await simpleReply(raw)).toEqual({ errno: 22, cookie: 1 });
    raw.write(request(1, 2, MiB - 512, 1024, Buffer.alloc(1024)));
    expect(await simpleReply(raw)).toEqual({ errno: 28, cookie: 2 });
    raw.write(request(42, 3, 0, 0));
    expect(await simpleReply(raw)).toEqual({ errno: 22, cookie: 3 });
    raw.socket.destroy();
    await server.close();
  });

  it('a request with a bad magic makes the server drop the connection without a reply', async () => {
    const { server, path } = await serve(memoryBackend(MiB));
    const { raw } = await rawGo(path, 'x');
    raw.write(request(0, 1, 0, 512, undefined, 0xdeadbeef));
    await raw.closed;
    expect(raw.pending).toBe(0);
    await server.close();
  });

  it('a WRITE announcing 2^25 bytes or more, above the maximum payload, makes the server drop the connection', async () => {
    const { server, path } = await serve(memoryBackend(64 * MiB));
    const { raw } = await rawGo(path, 'x');
    raw.write(request(1, 1, 0, 40 * MiB));
    await raw.closed;
    expect(raw.pending).toBe(0);
    await server.close();
  });

  it('backend errors map to NBD errors: CORRUPT → EIO (UNAVAILABLE), NOT_SUPPORTED → EINVAL (never ENOTSUP), INVALID_INPUT → EINVAL', async () => {
    const codes = ['CORRUPT', 'NOT_SUPPORTED', 'INVALID_INPUT'] as const;
    const failing: NbdBackend = {
      size: MiB,
      read: async (o) => {
        throw new CairnError(codes[o / 4096]!, 'backend says no');
      },
    };
    const { server, path } = await serve(failing);
    const c = await NbdClient.connect({ path, exportName: 'x' });
    await expect(c.read(0, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { nbdError: 5 } });
    // proto.md: the server "SHOULD NOT return NBD_ENOTSUP except as documented in response to
    // NBD_CMD_WRITE_ZEROES when NBD_CMD_FLAG_FAST_ZERO is supported" (fast zero is not offered).
    await expect(c.read(4096, 512)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { nbdError: 22 } });
    await expect(c.read(8192, 512)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { nbdError: 22 } });
    await c.disconnect();
    // The same on the wire, for a READ and a WRITE, with simple replies.
    const unsupported: NbdBackend = {
      size: MiB,
      read: async () => {
        throw new CairnError('NOT_SUPPORTED', 'backend cannot');
      },
      write: async () => {
        throw new CairnError('NOT_SUPPORTED', 'backend cannot');
      },
    };
    const other = await serve(unsupported);
    const { raw } = await rawGo(other.path, 'x');
    raw.write(request(0, 7, 0, 512));
    expect(await simpleReply(raw)).toEqual({ errno: 22, cookie: 7 });
    raw.write(request(1, 8, 0, 512, Buffer.alloc(512)));
    expect(await simpleReply(raw)).toEqual({ errno: 22, cookie: 8 });
    raw.socket.destroy();
    await other.server.close();
    await server.close();
  });

  it('blockStatus(dirty bitmap) gets EIO when the backend gives no usable descriptor for it (0 would say clean); for base:allocation alone that still reads as data', async () => {
    const DIRTY = 'qemu:dirty-bitmap:c1';
    // Per call: nothing, undefined, only a zero-length descriptor; then a real answer.
    const answers: Array<Array<{ length: number; flags: number }> | undefined> = [[], undefined, [{ length: 0, flags: 1 }]];
    const backend: NbdBackend = {
      size: MiB,
      metaContexts: [DIRTY],
      read: async (_o, len) => Buffer.alloc(len),
      async blockStatus(context, _offset, length) {
        if (context !== DIRTY) return [];
        return answers.length > 0 ? answers.shift() : [{ length, flags: 1 }];
      },
    };
    const { server, path } = await serve(backend);
    const c = await NbdClient.connect({ path, exportName: 'x', metaContexts: ['base:allocation', DIRTY] });
    for (let i = 0; i < 3; i++) {
      await expect(c.blockStatus(DIRTY, 0, 64 * 1024)).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { nbdError: 5 } });
    }
    expect(await c.blockStatus(DIRTY, 0, 64 * 1024)).toEqual([{ offset: 0, length: 64 * 1024, flags: 1 }]);
    // A dirty bitmap context the backend cannot describe at all (no blockStatus): EIO as well.
    const bare = await serve({ size: MiB, metaContexts: [DIRTY], read: async (_o, len) => Buffer.alloc(len) });
    const d = await NbdClient.connect({ path: bare.path, exportName: 'x', metaContexts: ['base:allocation', DIRTY] });
    await expect(d.blockStatus(DIRTY, 0, 4096)).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { nbdError: 5 } });
    // With base:allocation alone selected, no status from the backend is "data" (always true).
    const e = await NbdClient.connect({ path: bare.path, exportName: 'x', metaContexts: ['base:allocation'] });
    expect(await e.blockStatus('base:allocation', 0, 4096)).toEqual([{ offset: 0, length: 4096, flags: 0 }]);
    await Promise.all([c.disconnect(), d.disconnect(), e.disconnect()]);
    await Promise.all([server.close(), bare.server.close()]);
  });

  it('structuredReplies:false reads data and zero runs from our server exactly', async () => {
    const backend = memoryBackend(4 * MiB);
    const { server, path } = await serve(backend);
    const c = await NbdClient.connect({ path, exportName: 'x', structuredReplies: false });
    expect(c.structuredReplies).toBe(false);
    expect((await c.read(MiB, 2 * MiB)).equals(backend.bytes.subarray(MiB, 3 * MiB))).toBe(true);
    await c.disconnect();
    await server.close();
  });

  it('block sizes are honoured: writes split at the maximum payload, unaligned reads bounce, unaligned writes fail INVALID_INPUT', async () => {
    const backend = memoryBackend(8 * MiB);
    const sizes: number[] = [];
    const write = backend.write!.bind(backend);
    backend.write = async (o, data, opts) => {
      sizes.push(data.length);
      await write(o, data, opts);
    };
    const server = new NbdServer({ exports: [{ name: 'x', backend }], minBlockSize: 512, preferredBlockSize: 4096, maxPayload: MiB });
    const path = sockPath();
    await server.listen({ path });
    const c = await NbdClient.connect({ path, exportName: 'x' });
    expect(c.blockSizes).toEqual({ min: 512, preferred: 4096, max: MiB });
    const data = pattern(3.5 * MiB, 21);
    await c.write(MiB, data);
    expect(sizes).toEqual([MiB, MiB, MiB, MiB / 2]);
    expect(backend.bytes.subarray(MiB, 4.5 * MiB).equals(data)).toBe(true);
    expect((await c.read(MiB + 100, 1000)).equals(data.subarray(100, 1100))).toBe(true);
    await expect(c.write(100, Buffer.alloc(512))).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await c.disconnect();
    await server.close();
  });

  it('close() lets requests in flight finish, then disconnects and refuses new clients', async () => {
    const backend = memoryBackend(MiB);
    const slow: NbdBackend = { size: MiB, read: (o, len) => new Promise((r) => setTimeout(() => r(backend.read(o, len)), 100)) };
    const { server, path } = await serve(slow);
    const c = await NbdClient.connect({ path, exportName: 'x' });
    const pending = c.read(0, 8192);
    await new Promise((r) => setTimeout(r, 20));
    const closing = server.close();
    expect((await pending).equals(backend.bytes.subarray(0, 8192))).toBe(true);
    await closing;
    await expect(c.read(0, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(NbdClient.connect({ path, exportName: 'x' })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});

describe('error mapping and window', () => {
  it('nbdErrorCode maps EPERM/EINVAL → INVALID_INPUT, ENOTSUP → NOT_SUPPORTED, EIO/ENOSPC → UNAVAILABLE', () => {
    expect([1, 22, 75, 95, 5, 28, 108].map(nbdErrorCode)).toEqual([
      'INVALID_INPUT',
      'INVALID_INPUT',
      'INVALID_INPUT',
      'NOT_SUPPORTED',
      'UNAVAILABLE',
      'UNAVAILABLE',
      'UNAVAILABLE',
    ]);
    expect(toNbdErrno(new CairnError('UNAVAILABLE', 'x'))).toBe(5);
    expect(toNbdErrno(new Error('plain'))).toBe(5);
  });

  it('InFlightWindow.acquire waits beyond the limit and fail() rejects the waiters', async () => {
    const w = new InFlightWindow(2);
    await w.acquire();
    await w.acquire();
    let third = false;
    const p = w.acquire().then(() => (third = true));
    await new Promise((r) => setTimeout(r, 5));
    expect(third).toBe(false);
    w.release();
    await p;
    expect(third).toBe(true);
    expect(w.peakInFlight).toBe(2);
    const waiting = w.acquire();
    w.fail(new CairnError('UNAVAILABLE', 'gone'));
    await expect(waiting).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});
