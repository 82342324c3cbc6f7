// Adversarial input at every phase of an NbdServer session, sent over raw sockets with a seeded
// PRNG (deterministic): the server must answer per proto.md or drop only the offending client,
// never crash or raise an unhandled error, keep serving other clients, and hold bounded memory
// for a client that sends requests and never reads the replies.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdServer, type NbdBackend } from '../src/index.js';
import { tempDir } from './helpers/peers.js';
import { RawSocket, rawGo, simpleReply, u16, u32 } from './helpers/raw-nbd.js';

// Numbers from proto.md, written here so the test holds the server to the spec.
const IHAVEOPT = Buffer.from('IHAVEOPT');
const REQUEST_MAGIC = 0x25609513;
const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 };
const REP_ACK = 1;
const REP_ERR_UNSUP = 0x80000001;
const REP_ERR_INVALID = 0x80000003;
const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 };
const FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 };
const E = { OK: 0, EPERM: 1, EINVAL: 22, ENOSPC: 28 };

const SIZE = 1024 * 1024;
const MAX_PAYLOAD = 64 * 1024;
const EXPORT = 'fz';

/** mulberry32: a small deterministic PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An in-memory writable export; zeroing records whether it ran. */
function memoryBackend(): NbdBackend & { bytes: Buffer; zeroCalls: number } {
  const b = {
    bytes: Buffer.alloc(SIZE, 0xaa),
    size: SIZE,
    zeroCalls: 0,
    async read(o: number, len: number) {
      return Buffer.from(b.bytes.subarray(o, o + len));
    },
    async write(o: number, data: Buffer) {
      data.copy(b.bytes, o);
    },
    async writeZeroes(o: number, len: number) {
      b.zeroCalls++;
      b.bytes.fill(0, o, o + len);
    },
    async trim() {},
    async flush() {},
  };
  return b;
}

let dir: { path: string; remove: () => Promise<void> };
let server: NbdServer;
let backend: ReturnType<typeof memoryBackend>;
let path: string;
const serverErrors: unknown[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (e: unknown): void => void unhandled.push(e);

beforeAll(async () => {
  process.on('uncaughtException', onUnhandled).on('unhandledRejection', onUnhandled);
  dir = await tempDir('nbd-fuzz-');
  backend = memoryBackend();
  server = new NbdServer({
    exports: [{ name: EXPORT, backend }],
    maxPayload: MAX_PAYLOAD,
    maxReadBytesPerConnection: 1024 * 1024,
    maxWriteBytesPerConnection: 1024 * 1024,
    handshakeTimeoutMs: 1500,
    idleTimeoutMs: 1500,
    onError: (e) => void serverErrors.push(e),
  });
  path = join(dir.path, 'fz.sock');
  await server.listen({ path });
});
afterAll(async () => {
  await server?.close({ drainTimeoutMs: 1000 });
  await dir?.remove();
  process.off('uncaughtException', onUnhandled).off('unhandledRejection', onUnhandled);
  expect(unhandled).toEqual([]);
  expect(serverErrors).toEqual([]);
});

function option(opt: number, data: Buffer = Buffer.alloc(0), declared = data.length): Buffer {
  return Buffer.concat([IHAVEOPT, u32(opt), u32(declared), data]);
}

function infoRequest(name: string, infos: number[], declaredCount = infos.length): Buffer {
  const n = Buffer.from(name);
  return Buffer.concat([u32(n.length), n, u16(declaredCount), ...infos.map(u16)]);
}

/** A request frame with a 64-bit offset given as a bigint. */
function frame(type: number, flags: number, cookie: number, offset: bigint, length: number, payload?: Buffer, magic = REQUEST_MAGIC): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(magic, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(BigInt(cookie), 8);
  h.writeBigUInt64BE(offset, 16);
  h.writeUInt32BE(length >>> 0, 24);
  return payload ? Buffer.concat([h, payload]) : h;
}

/** Connects, reads the greeting and sends client flags FIXED_NEWSTYLE | NO_ZEROES. */
async function hello(): Promise<RawSocket> {
  const raw = await RawSocket.connect(path);
  const greeting = await raw.read(18);
  expect(greeting.subarray(0, 8).toString()).toBe('NBDMAGIC');
  raw.write(u32(3));
  return raw;
}

interface Reply {
  option: number;
  type: number;
  body: Buffer;
}

async function optionReply(raw: RawSocket): Promise<Reply> {
  const head = await raw.read(20);
  expect(head.readBigUInt64BE(0)).toBe(OPTION_REPLY_MAGIC);
  return { option: head.readUInt32BE(8), type: head.readUInt32BE(12), body: await raw.read(head.readUInt32BE(16)) };
}

/** Reads replies to `opt` up to the final one (ACK or an error); returns them all. */
async function finalReply(raw: RawSocket, opt: number): Promise<Reply[]> {
  const all: Reply[] = [];
  for (;;) {
    const r = await optionReply(raw);
    expect(r.option).toBe(opt);
    all.push(r);
    if (r.type === REP_ACK || r.type >= 0x80000000) return all;
  }
}

/** The server still serves a well-behaved client: negotiate, read a block, disconnect. */
async function healthy(): Promise<void> {
  const { raw, size } = await rawGo(path, EXPORT);
  expect(size).toBe(SIZE);
  raw.write(frame(CMD.READ, 0, 77, 4096n, 512));
  expect(await simpleReply(raw)).toEqual({ errno: 0, cookie: 77 });
  expect((await raw.read(512)).equals(backend.bytes.subarray(4096, 4608))).toBe(true);
  raw.write(frame(CMD.DISC, 0, 78, 0n, 0));
  await raw.closed;
}

/** Resolves true once the server closed the connection (reading and discarding what it sends). */
async function droppedByServer(raw: RawSocket): Promise<boolean> {
  raw.socket.resume();
  await raw.closed;
  return true;
}

describe('NbdServer fuzz: handshake phase', () => {
  it('drops clients that break the framing, and keeps serving others', async () => {
    const hostile: Array<[string, Buffer]> = [
      ['unknown client flags', u32(0xfffffffc)],
      ['bad option magic', Buffer.concat([Buffer.from('IHAVEOPX'), u32(OPT.LIST), u32(0)])],
      ['option length 2^32-1', Buffer.concat([IHAVEOPT, u32(OPT.GO), u32(0xffffffff), Buffer.alloc(64)])],
      ['option length over 32 MiB', Buffer.concat([IHAVEOPT, u32(OPT.INFO), u32(32 * 1024 * 1024 + 1)])],
      ['a transmission request before negotiation ends', frame(CMD.READ, 0, 1, 0n, 512)],
      ['NBD_OPT_EXPORT_NAME of an unknown export', option(OPT.EXPORT_NAME, Buffer.from('nope'))],
    ];
    for (const [why, bytes] of hostile) {
      const raw = await RawSocket.connect(path);
      await raw.read(18);
      raw.write(why === 'unknown client flags' ? bytes : Buffer.concat([u32(3), bytes]));
      expect(await droppedByServer(raw), why).toBe(true);
      await healthy();
    }
  });

  it('answers absurd NBD_OPT_INFO/GO requests with NBD_REP_ERR_INVALID and stays in negotiation', async () => {
    const raw = await hello();
    const name = Buffer.from(EXPORT);
    const cases: Buffer[] = [
      infoRequest(EXPORT, [], 65535), // count far above the data
      infoRequest(EXPORT, [3, 3], 1), // data beyond the count
      Buffer.concat([u32(0xffffffff), name, u16(0)]), // name length 2^32-1
      Buffer.concat([u32(5000), Buffer.alloc(5000, 0x61), u16(0)]), // name above 4096 bytes
      Buffer.alloc(3), // shorter than a name length
    ];
    for (const opt of [OPT.INFO, OPT.GO]) {
      for (const data of cases) {
        raw.write(option(opt, data));
        const [r] = await finalReply(raw, opt);
        expect(r!.type).toBe(REP_ERR_INVALID);
      }
    }
    // Many duplicate info requests: each type is answered at most once.
    raw.write(option(OPT.INFO, infoRequest(EXPORT, Array.from({ length: 30000 }, (_, i) => i % 5))));
    const infos = await finalReply(raw, OPT.INFO);
    expect(infos.at(-1)!.type).toBe(REP_ACK);
    const types = infos.slice(0, -1).map((r) => r.body.readUInt16BE(0));
    expect(new Set(types).size).toBe(types.length);
    // Still negotiating: structured replies twice, then GO works.
    raw.write(option(OPT.STRUCTURED_REPLY));
    raw.write(option(OPT.STRUCTURED_REPLY));
    expect((await finalReply(raw, OPT.STRUCTURED_REPLY)).at(-1)!.type).toBe(REP_ACK);
    const second = (await finalReply(raw, OPT.STRUCTURED_REPLY)).at(-1)!.type;
    expect(second === REP_ACK || second >= 0x80000000).toBe(true);
    raw.write(option(OPT.GO, infoRequest(EXPORT, [])));
    expect((await finalReply(raw, OPT.GO)).at(-1)!.type).toBe(REP_ACK);
    raw.socket.destroy();
    await healthy();
  });

  it('a seeded stream of unknown and malformed options gets exactly one final answer each', async () => {
    const rnd = prng(0xc0ffee);
    const raw = await hello();
    const pool = [OPT.LIST, OPT.STARTTLS, OPT.INFO, OPT.STRUCTURED_REPLY, OPT.LIST_META, OPT.SET_META, 0, 4, 11, 12, 0x7fffffff, 0xffffffff];
    for (let i = 0; i < 400; i++) {
      const opt = pool[Math.floor(rnd() * pool.length)]!;
      const len = rnd() < 0.5 ? Math.floor(rnd() * 16) : Math.floor(rnd() * 2048);
      const data = Buffer.alloc(len);
      for (let j = 0; j < len; j++) data[j] = Math.floor(rnd() * 256);
      // Sometimes a well-formed body for the option, with a random count.
      if (rnd() < 0.3 && (opt === OPT.INFO || opt === OPT.LIST_META || opt === OPT.SET_META)) {
        const count = Math.floor(rnd() * 70000);
        const body = opt === OPT.INFO ? infoRequest(EXPORT, [], count & 0xffff) : Buffer.concat([u32(EXPORT.length), Buffer.from(EXPORT), u32(count)]);
        raw.write(option(opt, body));
      } else raw.write(option(opt, data));
      const replies = await finalReply(raw, opt);
      const last = replies.at(-1)!.type;
      if (![OPT.LIST, OPT.INFO, OPT.STRUCTURED_REPLY, OPT.LIST_META, OPT.SET_META].includes(opt)) expect(last).toBe(REP_ERR_UNSUP);
    }
    raw.write(option(OPT.ABORT));
    expect((await finalReply(raw, OPT.ABORT)).at(-1)!.type).toBe(REP_ACK);
    expect(await droppedByServer(raw)).toBe(true);
    await healthy();
  });

  it('drops a client that stalls inside an option header or its data', async () => {
    const halfHeader = await hello();
    halfHeader.write(IHAVEOPT.subarray(0, 5));
    const halfData = await hello();
    halfData.write(Buffer.concat([IHAVEOPT, u32(OPT.GO), u32(100), Buffer.alloc(10)]));
    await healthy(); // served while the two stall
    expect(await droppedByServer(halfHeader)).toBe(true);
    expect(await droppedByServer(halfData)).toBe(true);
  });
});

/** The errno a correct server gives a request on this session (simple replies, no meta context). */
function expectedErrno(type: number, flags: number, offset: bigint, length: number): number {
  if ((flags & ~0x1f) !== 0) return E.EINVAL;
  // proto.md, command flags: FUA is valid on every command (SEND_FUA is sent here); NO_HOLE and
  // FAST_ZERO apply to WRITE_ZEROES only, FAST_ZERO only with SEND_FAST_ZERO (never sent: "SHOULD
  // fail with NBD_EINVAL"); DF applies to READ only with SEND_DF (not sent without structured
  // replies); REQ_ONE applies to BLOCK_STATUS only. Any other use: EINVAL.
  if ((flags & FLAG.NO_HOLE) !== 0 && type !== CMD.WRITE_ZEROES) return E.EINVAL;
  if ((flags & (FLAG.DF | FLAG.FAST_ZERO)) !== 0) return E.EINVAL;
  if ((flags & FLAG.REQ_ONE) !== 0 && type !== CMD.BLOCK_STATUS) return E.EINVAL;
  const past = offset + BigInt(length) > BigInt(SIZE);
  switch (type) {
    case CMD.READ:
      return past || length > MAX_PAYLOAD ? E.EINVAL : E.OK;
    case CMD.WRITE:
    case CMD.TRIM:
      return past ? E.ENOSPC : E.OK;
    case CMD.WRITE_ZEROES:
      return past ? E.ENOSPC : E.OK;
    case CMD.FLUSH:
      return E.OK;
    default:
      return E.EINVAL; // BLOCK_STATUS without a context, CACHE not offered, unknown types
  }
}

describe('NbdServer fuzz: transmission phase', () => {
  it('answers a seeded stream of hostile requests with the right errors, cookies echoed', async () => {
    const rnd = prng(20240601);
    const { raw } = await rawGo(path, EXPORT);
    const offsets = (): bigint => {
      const pick = Math.floor(rnd() * 8);
      if (pick === 0) return 0xffffffffffffffffn - BigInt(Math.floor(rnd() * 4096)); // offset+length wraps 2^64
      if (pick === 1) return 1n << 63n;
      if (pick === 2) return BigInt(SIZE) - BigInt(Math.floor(rnd() * 1024));
      if (pick === 3) return BigInt(SIZE);
      if (pick === 4) return 0x100000000n + BigInt(Math.floor(rnd() * 4096)); // only the high word set
      return BigInt(Math.floor(rnd() * SIZE));
    };
    const lengths = (): number => {
      const pick = Math.floor(rnd() * 6);
      if (pick === 0) return 0;
      if (pick === 1) return 0xffffffff;
      if (pick === 2) return MAX_PAYLOAD + 1 + Math.floor(rnd() * MAX_PAYLOAD);
      return Math.floor(rnd() * 8192);
    };
    const types = [CMD.READ, CMD.WRITE, CMD.FLUSH, CMD.TRIM, CMD.CACHE, CMD.WRITE_ZEROES, CMD.BLOCK_STATUS, 8, 9, 0x7fff, 0xffff];
    const flagChoices = [0, FLAG.FUA, FLAG.NO_HOLE, FLAG.DF, FLAG.REQ_ONE, FLAG.FAST_ZERO, FLAG.FUA | FLAG.FAST_ZERO, FLAG.FUA | FLAG.NO_HOLE, 0x20, 0x8000, 0xffff];
    let cookie = 1;
    for (let batch = 0; batch < 150; batch++) {
      const sent = new Map<number, { errno: number; readLength: number }>();
      for (let i = 0; i < 12; i++) {
        const type = types[Math.floor(rnd() * types.length)]!;
        const flags = flagChoices[Math.floor(rnd() * flagChoices.length)]!;
        const offset = offsets();
        // WRITEs above the maximum payload are tested in server-oversize-write.test.ts.
        const length = type === CMD.WRITE ? Math.floor(rnd() * 4096) : lengths();
        const payload = type === CMD.WRITE ? Buffer.alloc(length, cookie & 0xff) : undefined;
        const errno = expectedErrno(type, flags, offset, length);
        sent.set(cookie, { errno, readLength: type === CMD.READ && errno === 0 ? length : 0 });
        raw.write(frame(type, flags, cookie, offset, length, payload));
        cookie++;
      }
      while (sent.size > 0) {
        const r = await simpleReply(raw);
        const want = sent.get(r.cookie);
        expect(want, `reply for unknown cookie ${r.cookie}`).toBeDefined();
        expect(r.errno, `errno for cookie ${r.cookie}`).toBe(want!.errno);
        if (want!.readLength > 0) await raw.read(want!.readLength);
        sent.delete(r.cookie);
      }
    }
    raw.write(frame(CMD.DISC, 0, cookie, 0n, 0));
    await raw.closed;
    await healthy();
  });

  it('does not zero when NBD_CMD_FLAG_FAST_ZERO was sent (fast zero is not offered): EINVAL', async () => {
    const { raw } = await rawGo(path, EXPORT);
    backend.bytes.fill(0x5a, 8192, 12288);
    const before = backend.zeroCalls;
    raw.write(frame(CMD.WRITE_ZEROES, FLAG.FAST_ZERO, 9, 8192n, 4096));
    // proto.md: without NBD_FLAG_SEND_FAST_ZERO the server "SHOULD NOT fail with NBD_ENOTSUP" and
    // "SHOULD fail with NBD_EINVAL if the NBD_CMD_FLAG_FAST_ZERO flag was set".
    expect(await simpleReply(raw)).toEqual({ errno: E.EINVAL, cookie: 9 });
    expect(backend.zeroCalls).toBe(before);
    expect(backend.bytes.subarray(8192, 12288).every((b) => b === 0x5a)).toBe(true);
    raw.socket.destroy();
  });

  it('drops a client with a bad request magic or a write payload of 2^25 bytes or more, and only that client', async () => {
    // proto.md: lengths under 2^25 "SHOULD NOT be considered a denial of service attack" (those
    // get EINVAL: server-oversize-write.test.ts); from 2^25 on the server MAY hang up.
    for (const bad of [frame(CMD.READ, 0, 1, 0n, 512, undefined, 0x25609514), frame(CMD.WRITE, 0, 2, 0n, 2 ** 25)]) {
      const other = await rawGo(path, EXPORT);
      const { raw } = await rawGo(path, EXPORT);
      raw.write(bad);
      expect(await droppedByServer(raw)).toBe(true);
      other.raw.write(frame(CMD.READ, 0, 5, 0n, 16));
      expect(await simpleReply(other.raw)).toEqual({ errno: 0, cookie: 5 });
      await other.raw.read(16);
      other.raw.socket.destroy();
    }
  });

  it('drops a client that stalls halfway through a request header or a write payload (idle timeout)', async () => {
    const half = await rawGo(path, EXPORT);
    half.raw.write(frame(CMD.READ, 0, 1, 0n, 512).subarray(0, 13));
    const partial = await rawGo(path, EXPORT);
    partial.raw.write(frame(CMD.WRITE, 0, 2, 0n, 4096, Buffer.alloc(100)));
    await healthy();
    expect(await droppedByServer(half.raw)).toBe(true);
    expect(await droppedByServer(partial.raw)).toBe(true);
  });

  it('stops reading from a client that pipelines requests and never reads replies; memory stays bounded', async () => {
    const { raw } = await rawGo(path, EXPORT);
    raw.socket.pause(); // from now on this client reads nothing
    // Full-size READs: unbounded, the replies would come to 64 KiB per 28-byte request.
    const chunk = Buffer.concat(Array.from({ length: 2048 }, (_, i) => frame(CMD.READ, 0, i, BigInt((i % 16) * MAX_PAYLOAD), MAX_PAYLOAD)));
    const before = process.memoryUsage().arrayBuffers;
    let sent = 0;
    let stalled = false;
    // Offer up to 64 MiB of requests (about 150 GiB of replies); a server that keeps reading takes them all.
    while (sent < 64 * 1024 * 1024) {
      const flushed = new Promise<boolean>((resolve) => raw.socket.write(chunk, () => resolve(true)));
      const timeout = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 1500).unref());
      if (!(await Promise.race([flushed, timeout]))) {
        stalled = true;
        break;
      }
      sent += chunk.length;
    }
    const grown = process.memoryUsage().arrayBuffers - before;
    expect(stalled).toBe(true);
    expect(sent).toBeLessThan(8 * 1024 * 1024);
    // The read budget is 1 MiB; allow the socket buffers and one chunk of slack.
    expect(grown).toBeLessThan(48 * 1024 * 1024);
    await healthy(); // another client is served meanwhile
    raw.socket.destroy();
    await raw.closed;
  });
});
