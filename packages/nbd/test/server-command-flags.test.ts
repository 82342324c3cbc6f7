// NbdServer and command flags against what was negotiated (proto.md, "Command flags" and "Error
// values"): FUA is taken on every command once NBD_FLAG_SEND_FUA was sent and refused without it;
// NO_HOLE and FAST_ZERO apply to WRITE_ZEROES only, FAST_ZERO only with NBD_FLAG_SEND_FAST_ZERO
// (never sent: EINVAL, not ENOTSUP); DF applies to READ only and needs NBD_FLAG_SEND_DF, offered
// with structured replies, where a DF read gets one content chunk; REQ_ONE applies to BLOCK_STATUS
// only. Raw sockets, so nothing but the server decides what is sent.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdServer, type NbdBackend, type ReadRun } from '../src/index.js';
import { run, tempDir } from './helpers/peers.js';
import { BLOCK_STATUS, DONE, ERROR, OFFSET_DATA, OFFSET_HOLE, flaggedRequest, rawGo, rawStructuredGo, readChunk, simpleReply } from './helpers/raw-nbd.js';

// Numbers from proto.md, written here so the test holds the server to the spec.
const CMD = { READ: 0, WRITE: 1, FLUSH: 3, TRIM: 4, WRITE_ZEROES: 6, BLOCK_STATUS: 7 };
const FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 };
const TF = { SEND_FUA: 1 << 3, SEND_DF: 1 << 7, SEND_FAST_ZERO: 1 << 11 };
const EINVAL = 22;
const SIZE = 64 * 1024;
const BLOCK = 4096;

/** Even 4 KiB blocks hold data (the block's index + 1), odd ones read as a zero run. */
function memoryBackend(readOnly: boolean): NbdBackend & { bytes: Buffer; calls: string[] } {
  const bytes = Buffer.alloc(SIZE);
  for (let b = 0; b < SIZE / BLOCK; b += 2) bytes.fill(b + 1, b * BLOCK, (b + 1) * BLOCK);
  const calls: string[] = [];
  const backend = {
    bytes,
    calls,
    size: SIZE,
    async read(o: number, len: number): Promise<ReadRun[]> {
      const runs: ReadRun[] = [];
      for (let at = o; at < o + len; ) {
        const to = Math.min(o + len, (Math.floor(at / BLOCK) + 1) * BLOCK);
        const zero = Math.floor(at / BLOCK) % 2 === 1 && bytes.subarray(at, to).every((x) => x === 0);
        runs.push(zero ? { zero: to - at } : Buffer.from(bytes.subarray(at, to)));
        at = to;
      }
      return runs;
    },
  };
  if (readOnly) return backend;
  return Object.assign(backend, {
    async write(o: number, data: Buffer, { fua }: { fua: boolean }) {
      calls.push(`write${fua ? '+fua' : ''}`);
      data.copy(bytes, o);
    },
    async writeZeroes(o: number, len: number, { mayTrim }: { mayTrim: boolean }) {
      calls.push(`zero${mayTrim ? '' : '+nohole'}`);
      bytes.fill(0, o, o + len);
    },
    async trim() {
      calls.push('trim');
    },
    async flush() {
      calls.push('flush');
    },
  });
}

let dir: { path: string; remove: () => Promise<void> };
let server: NbdServer;
let path: string;
let rw: ReturnType<typeof memoryBackend>;

beforeAll(async () => {
  dir = await tempDir('nbd-flags-');
  rw = memoryBackend(false);
  server = new NbdServer({
    exports: [
      { name: 'rw', backend: rw },
      { name: 'ro', backend: memoryBackend(true) },
    ],
  });
  path = join(dir.path, 'f.sock');
  await server.listen({ path });
});
afterAll(async () => {
  await server?.close();
  await dir?.remove();
});

describe('NbdServer command flags, simple replies', () => {
  it('takes each flag only on the commands proto.md documents it for, and only when negotiated', async () => {
    const { raw, flags } = await rawGo(path, 'rw');
    expect(flags & TF.SEND_FUA).toBe(TF.SEND_FUA);
    expect(flags & TF.SEND_DF).toBe(0); // MUST be clear without structured replies
    expect(flags & TF.SEND_FAST_ZERO).toBe(0);
    const payload = Buffer.alloc(512, 0xee);
    // [what, type, flags, offset, length, payload?, errno, backend calls it makes]
    const cases: Array<[string, number, number, number, number, Buffer | undefined, number, string[]]> = [
      ['READ + FUA (valid for all commands once SEND_FUA was sent)', CMD.READ, FLAG.FUA, 0, 512, undefined, 0, []],
      ['FLUSH + FUA', CMD.FLUSH, FLAG.FUA, 0, 0, undefined, 0, ['flush']],
      ['WRITE + FUA', CMD.WRITE, FLAG.FUA, 0, 512, payload, 0, ['write+fua']],
      ['WRITE_ZEROES + NO_HOLE', CMD.WRITE_ZEROES, FLAG.NO_HOLE, 8192, 512, undefined, 0, ['zero+nohole']],
      ['WRITE + NO_HOLE', CMD.WRITE, FLAG.NO_HOLE, 1024, 512, payload, EINVAL, []],
      ['TRIM + NO_HOLE', CMD.TRIM, FLAG.NO_HOLE, 0, 512, undefined, EINVAL, []],
      ['READ + DF (SEND_DF not sent)', CMD.READ, FLAG.DF, 0, 512, undefined, EINVAL, []],
      ['READ + REQ_ONE', CMD.READ, FLAG.REQ_ONE, 0, 512, undefined, EINVAL, []],
      ['WRITE + REQ_ONE', CMD.WRITE, FLAG.REQ_ONE, 2048, 512, payload, EINVAL, []],
      ['WRITE_ZEROES + FAST_ZERO (SEND_FAST_ZERO not sent)', CMD.WRITE_ZEROES, FLAG.FAST_ZERO, 16384, 512, undefined, EINVAL, []],
      ['FLUSH + FAST_ZERO', CMD.FLUSH, FLAG.FAST_ZERO, 0, 0, undefined, EINVAL, []],
      ['WRITE + bit 5 (unknown)', CMD.WRITE, 1 << 5, 3072, 512, payload, EINVAL, []],
    ];
    let cookie = 0;
    for (const [what, type, flags, offset, length, data, errno, calls] of cases) {
      const before = Buffer.from(rw.bytes);
      rw.calls.length = 0;
      raw.write(flaggedRequest(type, flags, ++cookie, offset, length, data));
      expect(await simpleReply(raw), what).toEqual({ errno, cookie });
      if (type === CMD.READ && errno === 0) expect((await raw.read(length)).equals(rw.bytes.subarray(offset, offset + length)), what).toBe(true);
      expect(rw.calls, what).toEqual(calls);
      if (errno !== 0) expect(rw.bytes.equals(before), `${what}: nothing written`).toBe(true);
    }
    raw.socket.destroy();
  });

  it('refuses FUA on a read-only export, which does not send NBD_FLAG_SEND_FUA', async () => {
    const { raw, flags } = await rawGo(path, 'ro');
    expect(flags & TF.SEND_FUA).toBe(0);
    raw.write(flaggedRequest(CMD.READ, FLAG.FUA, 1, 0, 512));
    expect(await simpleReply(raw)).toEqual({ errno: EINVAL, cookie: 1 });
    raw.write(flaggedRequest(CMD.READ, 0, 2, 0, 512));
    expect(await simpleReply(raw)).toEqual({ errno: 0, cookie: 2 });
    expect((await raw.read(512)).every((b) => b === 1)).toBe(true);
    raw.socket.destroy();
  });
});

describe('NbdServer command flags, structured replies', () => {
  it('sends NBD_FLAG_SEND_DF and answers a READ with DF in one OFFSET_DATA chunk, zeros written out', async () => {
    const { raw, flags, contexts } = await rawStructuredGo(path, 'ro', ['base:allocation']);
    expect(flags & TF.SEND_DF).toBe(TF.SEND_DF);
    const want = Buffer.alloc(SIZE);
    for (let b = 0; b < SIZE / BLOCK; b += 2) want.fill(b + 1, b * BLOCK, (b + 1) * BLOCK);

    // Without DF the server may fragment: data and hole chunks.
    raw.write(flaggedRequest(CMD.READ, 0, 1, 0, 4 * BLOCK));
    const types: number[] = [];
    for (;;) {
      const c = await readChunk(raw);
      types.push(c.type);
      if (c.flags & DONE) break;
    }
    expect(types).toContain(OFFSET_HOLE);

    // With DF: one content chunk covering the whole request (65536 bytes: proto.md says the
    // server MUST support unfragmented reads up to that length).
    raw.write(flaggedRequest(CMD.READ, FLAG.DF, 2, 0, SIZE));
    const one = await readChunk(raw);
    expect(one).toMatchObject({ type: OFFSET_DATA, cookie: 2, flags: DONE });
    expect(Number(one.body.readBigUInt64BE(0))).toBe(0);
    expect(one.body.subarray(8).equals(want)).toBe(true);

    // An unaligned DF read inside a hole and data.
    raw.write(flaggedRequest(CMD.READ, FLAG.DF, 3, BLOCK - 100, 300));
    const part = await readChunk(raw);
    expect(part).toMatchObject({ type: OFFSET_DATA, cookie: 3, flags: DONE });
    expect(Number(part.body.readBigUInt64BE(0))).toBe(BLOCK - 100);
    expect(part.body.subarray(8).equals(want.subarray(BLOCK - 100, BLOCK + 200))).toBe(true);

    // DF is for READ only; FUA is refused here (read-only: no SEND_FUA); REQ_ONE is taken on BLOCK_STATUS.
    for (const [cookie, f] of [
      [4, FLAG.DF],
      [5, FLAG.FUA],
    ] as const) {
      raw.write(flaggedRequest(CMD.BLOCK_STATUS, f, cookie, 0, BLOCK));
      const err = await readChunk(raw);
      expect(err).toMatchObject({ type: ERROR, cookie, flags: DONE });
      expect(err.body.readUInt32BE(0)).toBe(EINVAL);
    }
    raw.write(flaggedRequest(CMD.BLOCK_STATUS, FLAG.REQ_ONE, 6, 0, SIZE));
    const status = await readChunk(raw);
    expect(status).toMatchObject({ type: BLOCK_STATUS, cookie: 6, flags: DONE });
    expect(status.body.readUInt32BE(0)).toBe(contexts.get('base:allocation'));
    expect(status.body.length).toBe(4 + 8);
    raw.socket.destroy();
  });

  it('takes FUA on READ and BLOCK_STATUS of a writable export (SEND_FUA sent: the server MUST accept it)', async () => {
    const { raw, flags } = await rawStructuredGo(path, 'rw', ['base:allocation']);
    expect(flags & (TF.SEND_FUA | TF.SEND_DF)).toBe(TF.SEND_FUA | TF.SEND_DF);
    raw.write(flaggedRequest(CMD.READ, FLAG.FUA | FLAG.DF, 1, 0, 512));
    const data = await readChunk(raw);
    expect(data).toMatchObject({ type: OFFSET_DATA, cookie: 1, flags: DONE });
    expect(data.body.subarray(8).equals(rw.bytes.subarray(0, 512))).toBe(true);
    raw.write(flaggedRequest(CMD.BLOCK_STATUS, FLAG.FUA, 2, 0, BLOCK));
    expect(await readChunk(raw)).toMatchObject({ type: BLOCK_STATUS, cookie: 2, flags: DONE });
    raw.socket.destroy();
  });
});

describe('NbdServer command flags, a real client', () => {
  it('nbdinfo (libnbd) sees DF offered with structured replies, fast zero not offered', async () => {
    const r = await run('nbdinfo', ['--json', `nbd+unix:///rw?socket=${path}`]);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout) as { structured: boolean; exports: Array<Record<string, unknown>> };
    expect(info.structured).toBe(true);
    expect(info.exports[0]).toMatchObject({ can_df: true, can_fast_zero: false, can_fua: true, can_zero: true });
  });
});
