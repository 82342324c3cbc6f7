// NbdServer and a WRITE longer than the advertised maximum block size (proto.md, "Block size
// constraints"): "any *length* less than 2^25 (33,554,432) bytes SHOULD NOT be considered a denial
// of service attack (even if the advertised maximum block size is smaller)", and the server
// "SHOULD report an NBD_EINVAL error if the client's request ... is larger than the advertised
// maximum block size". So such a WRITE's payload is read and dropped, the request answered EINVAL
// and the connection kept; from 2^25 bytes on the server MAY drop the client. Raw sockets.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdServer, type NbdBackend } from '../src/index.js';
import { tempDir } from './helpers/peers.js';
import { DONE, ERROR, RawSocket, flaggedRequest, rawGo, rawStructuredGo, readChunk, simpleReply } from './helpers/raw-nbd.js';

// Numbers from proto.md, written here so the test holds the server to the spec.
const CMD = { READ: 0, WRITE: 1 };
const EINVAL = 22;
const DOS_LENGTH = 2 ** 25;
const SIZE = 48 * 1024 * 1024; // above 2^25, so the largest oversize WRITE is not past the end (ENOSPC)
const MAX_PAYLOAD = 64 * 1024;

/** An in-memory export whose writes can be held (`hold`) until released. */
function memoryBackend(): NbdBackend & { bytes: Buffer; writes: number; hold: Promise<void> | undefined } {
  const b = {
    bytes: Buffer.alloc(SIZE, 0x11),
    size: SIZE,
    writes: 0,
    hold: undefined as Promise<void> | undefined,
    async read(o: number, len: number) {
      return Buffer.from(b.bytes.subarray(o, o + len));
    },
    async write(o: number, data: Buffer) {
      b.writes++;
      await b.hold;
      data.copy(b.bytes, o);
    },
  };
  return b;
}

let dir: { path: string; remove: () => Promise<void> };
let server: NbdServer;
let backend: ReturnType<typeof memoryBackend>;
let path: string;

beforeAll(async () => {
  dir = await tempDir('nbd-oversize-');
  backend = memoryBackend();
  // One payload of the maximum fills the write budget: an oversize WRITE that needed budget (or a
  // buffer) would have to wait for it.
  server = new NbdServer({ exports: [{ name: 'x', backend }], maxPayload: MAX_PAYLOAD, maxWriteBytesPerConnection: MAX_PAYLOAD });
  path = join(dir.path, 'x.sock');
  await server.listen({ path });
});
afterAll(async () => {
  await server?.close({ drainTimeoutMs: 1000 });
  await dir?.remove();
});

describe('NbdServer: WRITE above the maximum payload', () => {
  it('under 2^25 bytes: the payload is read and dropped, EINVAL, nothing written, and the connection keeps working', async () => {
    const { raw } = await rawGo(path, 'x');
    const writesBefore = backend.writes;
    const big = Buffer.alloc(MAX_PAYLOAD + 1, 0xee);
    const small = Buffer.alloc(512, 0x77);
    // The oversize WRITE, then (same packet) a valid WRITE: parsed right only if the oversize
    // payload was consumed exactly.
    raw.write(Buffer.concat([flaggedRequest(CMD.WRITE, 0, 1, 0, big.length, big), flaggedRequest(CMD.WRITE, 0, 2, 8192, 512, small)]));
    const replies = new Map<number, number>();
    for (let i = 0; i < 2; i++) {
      const r = await simpleReply(raw);
      replies.set(r.cookie, r.errno);
    }
    expect(Object.fromEntries(replies)).toEqual({ 1: EINVAL, 2: 0 });
    raw.write(flaggedRequest(CMD.READ, 0, 3, 8192, 512));
    expect(await simpleReply(raw)).toEqual({ errno: 0, cookie: 3 });
    expect((await raw.read(512)).equals(small)).toBe(true);
    expect(backend.writes).toBe(writesBefore + 1); // only the valid one
    expect(backend.bytes.subarray(0, 8192).every((x) => x === 0x11)).toBe(true);
    raw.socket.destroy();
  });

  it('takes no write budget: answered while another write holds the whole budget', async () => {
    const { raw } = await rawGo(path, 'x');
    let release!: () => void;
    backend.hold = new Promise((resolve) => (release = resolve));
    try {
      raw.write(flaggedRequest(CMD.WRITE, 0, 1, 0, MAX_PAYLOAD, Buffer.alloc(MAX_PAYLOAD, 1))); // held by the backend
      const big = Buffer.alloc(DOS_LENGTH - 1, 0xee); // the largest length that is not a DoS
      raw.write(flaggedRequest(CMD.WRITE, 0, 2, 0, big.length, big));
      expect(await simpleReply(raw)).toEqual({ errno: EINVAL, cookie: 2 });
    } finally {
      release();
      backend.hold = undefined;
    }
    expect(await simpleReply(raw)).toEqual({ errno: 0, cookie: 1 });
    raw.socket.destroy();
  });

  it('with structured replies: an NBD_REPLY_TYPE_ERROR chunk with EINVAL', async () => {
    const { raw } = await rawStructuredGo(path, 'x', []);
    const big = Buffer.alloc(2 * MAX_PAYLOAD, 0xee);
    raw.write(flaggedRequest(CMD.WRITE, 0, 9, 0, big.length, big));
    const c = await readChunk(raw);
    expect({ cookie: c.cookie, type: c.type, flags: c.flags & DONE, errno: c.body.readUInt32BE(0) }).toEqual({ cookie: 9, type: ERROR, flags: DONE, errno: EINVAL });
    raw.write(flaggedRequest(CMD.READ, 0, 10, 0, 16));
    expect((await readChunk(raw)).cookie).toBe(10);
    raw.socket.destroy();
  });

  it('of 2^25 bytes or more: the client is dropped (deemed a denial of service), others are served', async () => {
    const { raw } = await rawGo(path, 'x');
    raw.write(flaggedRequest(CMD.WRITE, 0, 1, 0, DOS_LENGTH));
    await raw.closed;
    expect(raw.pending).toBe(0); // no reply
    const other: RawSocket = (await rawGo(path, 'x')).raw;
    other.write(flaggedRequest(CMD.READ, 0, 2, 0, 16));
    expect(await simpleReply(other)).toEqual({ errno: 0, cookie: 2 });
    other.socket.destroy();
  });
});
