// NbdClient against scripted servers whose replies break proto.md's rules: every such reply is a
// protocol violation (CORRUPT) that fails the connection, and a failure, once declared, is final:
// nothing more of the socket is parsed, so no reply after it completes.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { outcome } from './helpers/outcome.js';
import { ScriptedServers } from './helpers/scripted-servers.js';
import { BLOCK_STATUS, chunk, DONE, EINVAL, ERROR, ERROR_OFFSET, errorBody, fakeServer, NONE, OFFSET_DATA, OFFSET_HOLE, offsetData, offsetHole, simpleReplyTo, statusBody, type FakeServerOptions } from './helpers/raw-nbd.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** An error chunk type proto.md does not define (bit 15 set). */
const ERROR_UNKNOWN = 0x8003;
const CONTEXT_ID = 7;
/** A second negotiated context, and an id the server never granted. */
const BITMAP = 'qemu:dirty-bitmap:cp1';
const BITMAP_ID = 8;
const UNKNOWN_ID = 9;
/** Reads here are never answered: a request in flight when the connection fails. */
const UNANSWERED = 512 * KiB;
/** proto.md's limit on a string, error messages included (bytes). */
const MAX_STRING = 4096;

const scripted = new ScriptedServers('nbd-rv-');

beforeAll(() => scripted.open());
afterAll(() => scripted.close());

const READ = 0;
const WRITE = 1;
const DISC = 2;
const typeOf = (req: Buffer): number => req.readUInt16BE(6);

/** Structured replies, `base:allocation` as CONTEXT_ID and BITMAP as BITMAP_ID. */
const STRUCTURED: FakeServerOptions = { structuredContextId: CONTEXT_ID, moreContexts: [[BITMAP_ID, BITMAP]] };

/**
 * A fake server of 1 MiB negotiating as `options` says (default STRUCTURED). It reads every
 * request (and a WRITE's payload) and calls `answer` for each, except NBD_CMD_DISC and reads at
 * UNANSWERED, which it never answers. Resolves with its socket path.
 */
async function serve(answer: (req: Buffer, s: net.Socket) => void, options: FakeServerOptions = STRUCTURED): Promise<string> {
  const server = fakeServer(
    MiB,
    async (s, raw) => {
      scripted.track(s);
      for (;;) {
        const req = await raw.read(28);
        if (typeOf(req) === WRITE) await raw.read(req.readUInt32BE(24));
        const unanswered = typeOf(req) === DISC || (typeOf(req) === READ && Number(req.readBigUInt64BE(16)) === UNANSWERED);
        if (!unanswered) answer(req, s);
      }
    },
    options,
  );
  return scripted.listen(server);
}

/** `p`, with its rejection marked handled (inspected later with `outcome`). */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

type Call = (c: NbdClient) => Promise<unknown>;
const read4k: Call = (c) => c.read(0, 4096);
const status4k: Call = (c) => c.blockStatus('base:allocation', 0, 4096);
const write4k: Call = (c) => c.write(0, Buffer.alloc(4096, 0x33));

const data = (at: number, length: number): Buffer => offsetData(at, Buffer.alloc(length, 0x11));
/** A whole, valid reply to the 4 KiB call at offset 0 of each kind. */
const wholeRead = (req: Buffer): Buffer => chunk(req, DONE, OFFSET_DATA, data(0, 4096));
const wholeStatus = (req: Buffer): Buffer => chunk(req, DONE, BLOCK_STATUS, statusBody(CONTEXT_ID, [[4096, 0]]));
const status = (req: Buffer, id: number): Buffer => chunk(req, 0, BLOCK_STATUS, statusBody(id, [[4096, 1]]));
const noneDone = (req: Buffer): Buffer => chunk(req, DONE, NONE, Buffer.alloc(0));
/** An ERROR_OFFSET chunk (not the last) with EINVAL, a message and `offset`. */
const errorAt = (req: Buffer, offset: number): Buffer => chunk(req, 0, ERROR_OFFSET, errorBody(EINVAL, 'bad sector', offset));
const connect = (path: string): Promise<NbdClient> => NbdClient.connect({ path, metaContexts: ['base:allocation', BITMAP] });
/** An error chunk body with EINVAL and a message of `n` bytes (then `offset`, for ERROR_OFFSET). */
const errorOfLength = (n: number, offset?: number): Buffer => errorBody(EINVAL, 'm'.repeat(n), offset);
/** The header alone of a chunk of `type` (not the last) announcing a payload of `length` bytes. */
const headerOnly = (req: Buffer, type: number, length: number): Buffer => {
  const h = chunk(req, 0, type, Buffer.alloc(0));
  h.writeUInt32BE(length, 16);
  return h;
};

describe('NbdClient structured replies that proto.md forbids', () => {
  // Each reply is the forbidden chunk followed by a chunk that would complete the call.
  const cases: Array<[string, Call, (req: Buffer) => Buffer[]]> = [
    // Chunks that carry nothing and do not end the reply: a server could send them forever.
    ['read() gets a NONE chunk without the DONE flag', read4k, (req) => [chunk(req, 0, NONE, Buffer.alloc(0)), wholeRead(req)]],
    ['read() gets an OFFSET_HOLE chunk of size 0', read4k, (req) => [chunk(req, 0, OFFSET_HOLE, offsetHole(0, 0)), wholeRead(req)]],
    ['blockStatus() gets two BLOCK_STATUS chunks for its context', status4k, (req) => [status(req, CONTEXT_ID), wholeStatus(req)]],
    ['blockStatus() gets two BLOCK_STATUS chunks for the other negotiated context', status4k, (req) => [status(req, BITMAP_ID), status(req, BITMAP_ID), wholeStatus(req)]],
    ['blockStatus() gets a BLOCK_STATUS chunk for a context id that was not negotiated', status4k, (req) => [status(req, UNKNOWN_ID), wholeStatus(req)]],
    // A successful read reply that leaves bytes uncovered.
    ['read() gets a reply with DONE covering half the request', read4k, (req) => [chunk(req, DONE, OFFSET_DATA, data(0, 2048))]],
    // Already rejected before: chunks of a type not valid for the command, or outside the request.
    ['read() gets a BLOCK_STATUS chunk', read4k, (req) => [status(req, CONTEXT_ID), wholeRead(req)]],
    ['blockStatus() gets an OFFSET_DATA chunk', status4k, (req) => [chunk(req, 0, OFFSET_DATA, data(0, 4096)), wholeStatus(req)]],
    ['blockStatus() gets an OFFSET_HOLE chunk', status4k, (req) => [chunk(req, 0, OFFSET_HOLE, offsetHole(0, 4096)), wholeStatus(req)]],
    ['write() gets an OFFSET_DATA chunk', write4k, (req) => [chunk(req, DONE, OFFSET_DATA, data(0, 4096))]],
    ['write() gets an OFFSET_HOLE chunk', write4k, (req) => [chunk(req, DONE, OFFSET_HOLE, offsetHole(0, 4096))]],
    ['read() gets an OFFSET_DATA chunk past the request', read4k, (req) => [chunk(req, 0, OFFSET_DATA, data(4096, 512)), wholeRead(req)]],
    ['read() gets an OFFSET_HOLE chunk before the request', read4k, (req) => [chunk(req, 0, OFFSET_HOLE, offsetHole(UNANSWERED, 512)), wholeRead(req)]],
    ['read() gets a NONE chunk with a payload', read4k, (req) => [chunk(req, 0, NONE, Buffer.alloc(4)), wholeRead(req)]],
    // Error chunks whose length does not fit their fields, or whose offset is outside the request.
    ['read() gets an ERROR_OFFSET chunk of 13 bytes', read4k, (req) => [chunk(req, 0, ERROR_OFFSET, Buffer.concat([errorBody(EINVAL, ''), Buffer.alloc(7)])), wholeRead(req)]],
    ['read() gets an ERROR_OFFSET chunk whose message leaves no room for the offset', read4k, (req) => [chunk(req, 0, ERROR_OFFSET, errorBody(EINVAL, 'ten bytes!', 0).subarray(0, 20)), wholeRead(req)]],
    ['read() gets an ERROR_OFFSET chunk with bytes after its offset', read4k, (req) => [chunk(req, 0, ERROR_OFFSET, Buffer.concat([errorBody(EINVAL, 'bad', 0), Buffer.alloc(4)])), wholeRead(req)]],
    ['read() gets an ERROR_OFFSET chunk at the end of the request', read4k, (req) => [errorAt(req, 4096), wholeRead(req)]],
    ['read() gets an ERROR_OFFSET chunk at 2^63', read4k, (req) => [chunk(req, 0, ERROR_OFFSET, Buffer.concat([errorBody(EINVAL, 'far'), Buffer.from('8000000000000000', 'hex')])), wholeRead(req)]],
    ['read() gets an ERROR_OFFSET chunk inside the request, then one outside it', read4k, (req) => [errorAt(req, 0), errorAt(req, UNANSWERED), wholeRead(req)]],
    ['write() gets an ERROR_OFFSET chunk past the request', write4k, (req) => [errorAt(req, 8192), noneDone(req)]],
    ['blockStatus() gets an ERROR_OFFSET chunk past the request', status4k, (req) => [errorAt(req, 4096), wholeStatus(req)]],
    ['write() gets an ERROR chunk with bytes after its message', write4k, (req) => [chunk(req, 0, ERROR, Buffer.concat([errorBody(EINVAL, 'bad'), Buffer.alloc(2)])), noneDone(req)]],
    ['read() gets an error chunk of an unknown type of 4 bytes', read4k, (req) => [chunk(req, 0, ERROR_UNKNOWN, errorBody(EINVAL, '').subarray(0, 4)), wholeRead(req)]],
    ['read() gets an error chunk of an unknown type whose message overruns it', read4k, (req) => [chunk(req, 0, ERROR_UNKNOWN, errorBody(EINVAL, 'message').subarray(0, 8)), wholeRead(req)]],
    // A simple reply to a request whose structured reply has begun.
    ['blockStatus() gets a simple reply after its BLOCK_STATUS chunk', status4k, (req) => [status(req, CONTEXT_ID), simpleReplyTo(req, 0)]],
    ['write() gets a simple error reply after an ERROR chunk', write4k, (req) => [chunk(req, 0, ERROR, errorBody(EINVAL, 'bad')), simpleReplyTo(req, EINVAL)]],
    // A successful block status reply without the chunk for the context asked about.
    ['blockStatus() gets a reply with DONE carrying only the other context\'s chunk', status4k, (req) => [chunk(req, DONE, BLOCK_STATUS, statusBody(BITMAP_ID, [[4096, 1]]))]],
    ['blockStatus() gets NONE with DONE and nothing before it', status4k, (req) => [noneDone(req)]],
    ['blockStatus() gets a simple reply without error', status4k, (req) => [simpleReplyTo(req, 0)]],
    // Already rejected before.
    ['write() gets an ERROR chunk of 5 bytes', write4k, (req) => [chunk(req, 0, ERROR, errorBody(EINVAL, '').subarray(0, 5)), noneDone(req)]],
    ['write() gets an ERROR chunk whose message overruns it', write4k, (req) => [chunk(req, 0, ERROR, errorBody(EINVAL, 'message').subarray(0, 10)), noneDone(req)]],
    // A simple reply to a READ, though structured replies were negotiated: even an error.
    ['read() gets a simple error reply', read4k, (req) => [simpleReplyTo(req, EINVAL)]],
    // Error messages longer than a string may be.
    ['read() gets an ERROR chunk with a message of 4097 bytes', read4k, (req) => [chunk(req, 0, ERROR, errorOfLength(MAX_STRING + 1)), wholeRead(req)]],
    ['write() gets an ERROR_OFFSET chunk with a message of 4097 bytes', write4k, (req) => [chunk(req, 0, ERROR_OFFSET, errorOfLength(MAX_STRING + 1, 0)), noneDone(req)]],
    ['read() gets an error chunk of an unknown type with a message of 65535 bytes', read4k, (req) => [chunk(req, 0, ERROR_UNKNOWN, errorOfLength(0xffff)), wholeRead(req)]],
    // The same, the rest never sent: the header must be enough (for an unknown type, the first 4 KiB of its payload).
    ['read() gets only the header of an ERROR chunk of 4103 bytes', read4k, (req) => [headerOnly(req, ERROR, 6 + MAX_STRING + 1)]],
    ['read() gets only the header of an ERROR_OFFSET chunk of 4111 bytes', read4k, (req) => [headerOnly(req, ERROR_OFFSET, 14 + MAX_STRING + 1)]],
    ['read() gets the first 4102 bytes of an unknown error chunk of 32 MiB with a message of 5000 bytes', read4k, (req) => [headerOnly(req, ERROR_UNKNOWN, 32 * MiB), errorOfLength(5000).subarray(0, 6 + MAX_STRING)]],
    // Content chunks over the offset of an earlier ERROR_OFFSET chunk.
    ['read() gets an ERROR_OFFSET chunk, then an OFFSET_DATA chunk over its offset', read4k, (req) => [errorAt(req, 1000), wholeRead(req)]],
    ['read() gets an ERROR_OFFSET chunk at its last byte, then an OFFSET_DATA chunk ending there', read4k, (req) => [errorAt(req, 4095), wholeRead(req)]],
    ['read() gets an ERROR_OFFSET chunk, then an OFFSET_HOLE chunk starting at its offset', read4k, (req) => [errorAt(req, 2048), chunk(req, 0, OFFSET_DATA, data(0, 2048)), chunk(req, DONE, OFFSET_HOLE, offsetHole(2048, 2048))]],
    // A successful block status reply without a chunk for every negotiated context.
    ['blockStatus() gets a reply with DONE carrying only its own context\'s chunk', status4k, (req) => [wholeStatus(req)]],
    ['blockStatus() of the other context gets its chunk and NONE with DONE, none for base:allocation', (c) => c.blockStatus(BITMAP, 0, 4096), (req) => [status(req, BITMAP_ID), noneDone(req)]],
  ];

  it.each(cases)('%s: it fails with CORRUPT, as does a request in flight, and the connection is closed', async (_what, call, reply) => {
    const path = await serve((req, s) => s.write(Buffer.concat(reply(req))));
    const c = await connect(path);
    const inFlight = quiet(c.read(UNANSWERED, 4096));
    expect(await outcome(call(c), 2000)).toBe('CORRUPT');
    expect(await outcome(inFlight, 2000)).toBe('CORRUPT');
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('blockStatus() of either negotiated context, from replies with one BLOCK_STATUS chunk per context and then NONE with DONE, resolves with its descriptors', async () => {
    const path = await serve((req, s) =>
      s.write(Buffer.concat([status(req, BITMAP_ID), chunk(req, 0, BLOCK_STATUS, statusBody(CONTEXT_ID, [[4096, 0]])), chunk(req, DONE, NONE, Buffer.alloc(0))])),
    );
    const c = await connect(path);
    expect(await c.blockStatus('base:allocation', 0, 4096)).toEqual([{ offset: 0, length: 4096, flags: 0 }]);
    expect(await c.blockStatus(BITMAP, 0, 4096)).toEqual([{ offset: 0, length: 4096, flags: 1 }]);
    await c.disconnect();
  });

  it('read() gets a NONE chunk with a payload: the CORRUPT error names that chunk', async () => {
    const path = await serve((req, s) => s.write(Buffer.concat([chunk(req, 0, NONE, Buffer.alloc(4)), wholeRead(req)])));
    const c = await connect(path);
    const err = await c.read(0, 4096).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err).toMatchObject({ code: 'CORRUPT' });
    expect(err?.message).toMatch(/NONE chunk with a payload/);
  });

  it('read() of a reply with ERROR_OFFSET chunks inside the request, data and then NONE with DONE fails with the first error (INVALID_INPUT), and the connection stays up', async () => {
    const path = await serve((req, s) => {
      if (Number(req.readBigUInt64BE(16)) !== 0) return void s.write(chunk(req, DONE, OFFSET_DATA, offsetData(4096, Buffer.alloc(4096, 0x22))));
      s.write(Buffer.concat([errorAt(req, 0), chunk(req, 0, OFFSET_DATA, data(2048, 2048)), chunk(req, 0, ERROR_OFFSET, errorBody(5, 'later', 4095)), noneDone(req)]));
    });
    const c = await connect(path);
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { nbdError: EINVAL } });
    expect((await c.read(4096, 4096)).equals(Buffer.alloc(4096, 0x22))).toBe(true);
    await c.disconnect();
  });

  it('writeZeroes() and flush() (commands proto.md defines no ERROR_OFFSET for) of a reply with an ERROR_OFFSET chunk at any offset fail with its error, and the connection stays up', async () => {
    const HAS_FLAGS = 1;
    const SEND_FLUSH = 4;
    const SEND_WRITE_ZEROES = 64;
    const path = await serve(
      (req, s) => {
        if (typeOf(req) === READ) return void s.write(wholeRead(req));
        s.write(Buffer.concat([errorAt(req, 1 << 30), noneDone(req)]));
      },
      { ...STRUCTURED, transmissionFlags: HAS_FLAGS | SEND_FLUSH | SEND_WRITE_ZEROES },
    );
    const c = await connect(path);
    await expect(c.writeZeroes(0, 4096)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(c.flush()).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect((await c.read(0, 4096)).equals(Buffer.alloc(4096, 0x11))).toBe(true);
    await c.disconnect();
  });

  it('read() of a reply with an ERROR_OFFSET chunk, content chunks next to its offset, that offset again and one inside an earlier content chunk fails with the first error, and the connection stays up', async () => {
    // proto.md forbids only content over an earlier error offset; a repeated offset, or one inside earlier content, is a SHOULD NOT.
    const path = await serve((req, s) => {
      if (Number(req.readBigUInt64BE(16)) !== 0) return void s.write(chunk(req, DONE, OFFSET_DATA, offsetData(4096, Buffer.alloc(4096, 0x22))));
      const hole = chunk(req, 0, OFFSET_HOLE, offsetHole(2049, 2047));
      s.write(Buffer.concat([errorAt(req, 2048), chunk(req, 0, OFFSET_DATA, data(0, 2048)), hole, errorAt(req, 2048), errorAt(req, 3000), noneDone(req)]));
    });
    const c = await connect(path);
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { nbdError: EINVAL } });
    expect((await c.read(4096, 4096)).equals(Buffer.alloc(4096, 0x22))).toBe(true);
    await c.disconnect();
  });

  it('read() of a reply with an ERROR chunk (no offset) and then content covering the whole request fails with that error, and the connection stays up', async () => {
    const path = await serve((req, s) => {
      if (Number(req.readBigUInt64BE(16)) !== 0) return void s.write(chunk(req, DONE, OFFSET_DATA, offsetData(4096, Buffer.alloc(4096, 0x22))));
      s.write(Buffer.concat([chunk(req, 0, ERROR, errorBody(5, 'gone')), wholeRead(req)]));
    });
    const c = await connect(path);
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { nbdError: 5 } });
    expect((await c.read(4096, 4096)).equals(Buffer.alloc(4096, 0x22))).toBe(true);
    await c.disconnect();
  });

  it('write() and flush() of simple error replies (allowed to any command but READ) fail with their error, and the connection stays up', async () => {
    const HAS_FLAGS = 1;
    const SEND_FLUSH = 4;
    const path = await serve(
      (req, s) => {
        if (typeOf(req) === READ) return void s.write(wholeRead(req));
        s.write(simpleReplyTo(req, typeOf(req) === WRITE ? EINVAL : 5));
      },
      { ...STRUCTURED, transmissionFlags: HAS_FLAGS | SEND_FLUSH },
    );
    const c = await connect(path);
    await expect(c.write(0, Buffer.alloc(4096))).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { nbdError: EINVAL } });
    await expect(c.flush()).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { nbdError: 5 } });
    expect((await c.read(0, 4096)).equals(Buffer.alloc(4096, 0x11))).toBe(true);
    await c.disconnect();
  });

  it('error chunks of each kind with a message of exactly 4096 bytes fail their request with that message, and the connection stays up', async () => {
    // The error shows the message cut to 200 characters, with its whole length (SHOWN_MESSAGE).
    const message = `${'m'.repeat(200)}… (${MAX_STRING} characters)`;
    // After its message, the unknown error type carries 1 MiB this client knows nothing of.
    const kinds: Array<(req: Buffer, at: number) => Buffer> = [
      (req) => chunk(req, 0, ERROR, errorOfLength(MAX_STRING)),
      (req, at) => chunk(req, 0, ERROR_OFFSET, errorOfLength(MAX_STRING, at)),
      (req) => chunk(req, 0, ERROR_UNKNOWN, Buffer.concat([errorOfLength(MAX_STRING), Buffer.alloc(MiB, 0x55)])),
    ];
    const path = await serve((req, s) => {
      const at = Number(req.readBigUInt64BE(16));
      const kind = kinds[at / 4096];
      s.write(kind ? Buffer.concat([kind(req, at), noneDone(req)]) : chunk(req, DONE, OFFSET_DATA, offsetData(at, Buffer.alloc(4096, 0x22))));
    });
    const c = await connect(path);
    for (let i = 0; i < kinds.length; i++) {
      const err = await c.read(i * 4096, 4096).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err).toMatchObject({ code: 'INVALID_INPUT', details: { nbdError: EINVAL } });
      expect(err?.message.endsWith(`: ${message}`)).toBe(true);
    }
    expect((await c.read(kinds.length * 4096, 4096)).equals(Buffer.alloc(4096, 0x22))).toBe(true);
    await c.disconnect();
  });

  it('blockStatus() of a reply with an error chunk and a chunk for one negotiated context only fails with that error, and the connection stays up', async () => {
    const path = await serve((req, s) => {
      if (typeOf(req) === READ) return void s.write(wholeRead(req));
      s.write(Buffer.concat([status(req, CONTEXT_ID), chunk(req, DONE, ERROR, errorBody(EINVAL, 'bitmap gone'))]));
    });
    const c = await connect(path);
    await expect(c.blockStatus('base:allocation', 0, 4096)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { nbdError: EINVAL } });
    expect((await c.read(0, 4096)).equals(Buffer.alloc(4096, 0x11))).toBe(true);
    await c.disconnect();
  });

  it('read() of a reply of a hole, data and then NONE with DONE resolves with the zeros and the data', async () => {
    const path = await serve((req, s) =>
      s.write(Buffer.concat([chunk(req, 0, OFFSET_HOLE, offsetHole(0, 2048)), chunk(req, 0, OFFSET_DATA, data(2048, 2048)), chunk(req, DONE, NONE, Buffer.alloc(0))])),
    );
    const c = await connect(path);
    expect((await c.read(0, 4096, Buffer.alloc(4096, 0xee))).equals(Buffer.concat([Buffer.alloc(2048), Buffer.alloc(2048, 0x11)]))).toBe(true);
    await c.disconnect();
  });
});

describe('NbdClient without structured replies', () => {
  // A server that refused NBD_OPT_STRUCTURED_REPLY: proto.md says it MUST NOT send structured chunks.
  const cases: Array<[string, Call, (req: Buffer) => Buffer]> = [
    ['read() gets a whole OFFSET_DATA chunk with DONE', read4k, wholeRead],
    ['write() gets a NONE chunk with DONE', write4k, noneDone],
    ['read() gets an ERROR chunk with DONE', read4k, (req) => chunk(req, DONE, ERROR, errorBody(EINVAL, 'bad'))],
  ];

  it.each(cases)('%s: it fails with CORRUPT, as does a request in flight, and the connection is closed', async (_what, call, reply) => {
    const path = await serve((req, s) => s.write(reply(req)), {});
    const c = await connect(path);
    expect(c.structuredReplies).toBe(false);
    const inFlight = quiet(c.read(UNANSWERED, 4096));
    expect(await outcome(call(c), 2000)).toBe('CORRUPT');
    expect(await outcome(inFlight, 2000)).toBe('CORRUPT');
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});

describe('NbdClient after a protocol violation', () => {
  // One socket write: the offending reply to the read at 0, then a whole reply to the read at 4 KiB.
  const offending: Array<[string, (req: Buffer) => Buffer]> = [
    ['a reply with DONE covering half the read', (req) => chunk(req, DONE, OFFSET_DATA, data(0, 2048))],
    ['a NONE chunk without the DONE flag', (req) => chunk(req, 0, NONE, Buffer.alloc(0))],
    ['a chunk for a cookie never sent', (req) => chunk(Buffer.concat([req.subarray(0, 8), Buffer.from('ffffffffffffffff', 'hex'), req.subarray(16)]), DONE, NONE, Buffer.alloc(0))],
  ];

  it.each(offending)('read() whose whole reply follows %s in the same socket read fails with the same CORRUPT error', async (_what, bad) => {
    let first: Buffer | undefined;
    const path = await serve((req, s) => {
      if (!first) return void (first = req);
      s.write(Buffer.concat([bad(first), chunk(req, DONE, OFFSET_DATA, offsetData(4096, Buffer.alloc(4096, 0x22)))]));
    });
    const c = await connect(path);
    const offended = quiet(c.read(0, 4096));
    const after = quiet(c.read(4096, 4096));
    expect(await outcome(after, 2000)).toBe('CORRUPT');
    const [a, b] = await Promise.all([offended.catch((e: unknown) => e), after.catch((e: unknown) => e)]);
    expect(b).toBe(a);
    await expect(c.read(0, 4096)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});
