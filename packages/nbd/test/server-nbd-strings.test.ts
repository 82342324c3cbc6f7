// NbdServer and client strings that are not NBD strings. proto.md, Conventions: a string "is a
// sequence of UTF-8 code points, which is not `NUL` terminated, MUST NOT contain `NUL` characters
// ... and MUST be no longer than 4096 bytes"; NBD_REP_ERR_INVALID: the option "was determined by the
// server to be syntactically invalid". An export name or meta context query that is not valid UTF-8
// or has a NUL gets NBD_REP_ERR_INVALID, and the session goes on; it is never decoded with U+FFFD
// in place of the bad bytes (which would match the export `e\uFFFD` here). NBD_OPT_EXPORT_NAME
// cannot be answered with an error: the server hangs up, as for an unknown export. Raw socket.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdServer } from '../src/index.js';
import { optionFrame, optionReplies, rawHello, type RawSocket, u16, u32 } from './helpers/raw-nbd.js';
import { serveOnSocket, type SocketServer } from './helpers/socket-server.js';

// Numbers from proto.md, written here so the test holds the server to the spec.
const OPT = { EXPORT_NAME: 1, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 };
const REP = { ACK: 1, INFO: 3, META_CONTEXT: 4, ERR_INVALID: 0x80000003, ERR_UNKNOWN: 0x80000006 };
const SIZE = 1 << 20;

// 'e' followed by a byte that is not UTF-8: decoded leniently it is 'e\uFFFD', an export served here.
const E_FF = Buffer.from([0x65, 0xff]);

let served: SocketServer;
let path: string;
beforeAll(async () => {
  served = await serveOnSocket('nbd-sstr-', SIZE, 0, ['e', 'e\uFFFD']);
  path = served.path;
});
afterAll(() => served?.close());

/** Sends one option and returns its replies (type, and the META_CONTEXT name) up to the final one. */
async function option(raw: RawSocket, opt: number, data: Buffer): Promise<Array<{ type: number; name?: string }>> {
  raw.write(optionFrame(opt, data));
  return (await optionReplies(raw, opt)).map(({ type, body }) => (type === REP.META_CONTEXT ? { type, name: body.subarray(4).toString() } : { type }));
}

const str32 = (b: Buffer): Buffer => Buffer.concat([u32(b.length), b]);
const infoRequest = (name: Buffer): Buffer => Buffer.concat([str32(name), u16(0)]);
const metaRequest = (name: Buffer, queries: Buffer[]): Buffer => Buffer.concat([str32(name), u32(queries.length), ...queries.map(str32)]);

async function structuredSession(): Promise<RawSocket> {
  const raw = await rawHello(path);
  expect(await option(raw, OPT.STRUCTURED_REPLY, Buffer.alloc(0))).toEqual([{ type: REP.ACK }]);
  return raw;
}

// Export names that are not NBD strings.
const BAD_NAMES: Array<[string, Buffer]> = [
  ['not UTF-8', E_FF],
  ['NUL inside', Buffer.from('e\0e')],
  ['NUL terminated', Buffer.from('e\0')],
];

describe('NbdServer and strings that are not NBD strings', () => {
  it.each(BAD_NAMES)('NBD_OPT_INFO and NBD_OPT_GO, export name %s: NBD_REP_ERR_INVALID, the session goes on', async (_what, name) => {
    const raw = await structuredSession();
    expect(await option(raw, OPT.INFO, infoRequest(name))).toEqual([{ type: REP.ERR_INVALID }]);
    expect(await option(raw, OPT.GO, infoRequest(name))).toEqual([{ type: REP.ERR_INVALID }]);
    expect(await option(raw, OPT.GO, infoRequest(Buffer.from('e')))).toEqual([{ type: REP.INFO }, { type: REP.ACK }]);
    raw.socket.destroy();
  });

  it.each([
    ['NBD_OPT_LIST_META_CONTEXT', OPT.LIST_META],
    ['NBD_OPT_SET_META_CONTEXT', OPT.SET_META],
  ])('%s with an export name or a query that is not an NBD string: NBD_REP_ERR_INVALID, the session goes on', async (_name, opt) => {
    const raw = await structuredSession();
    for (const [, name] of BAD_NAMES) {
      expect(await option(raw, opt, metaRequest(name, [Buffer.from('base:allocation')]))).toEqual([{ type: REP.ERR_INVALID }]);
    }
    for (const query of [Buffer.from('base:allocation\0'), Buffer.from('base:\0allocation'), Buffer.from([...Buffer.from('base:'), 0xff]), Buffer.from([...Buffer.from('base:allocation'), 0xc0, 0xaf])]) {
      expect(await option(raw, opt, metaRequest(Buffer.from('e'), [Buffer.from('base:allocation'), query]))).toEqual([{ type: REP.ERR_INVALID }]);
    }
    expect(await option(raw, opt, metaRequest(Buffer.from('e'), [Buffer.from('base:allocation')]))).toEqual([
      { type: REP.META_CONTEXT, name: 'base:allocation' },
      { type: REP.ACK },
    ]);
    raw.socket.destroy();
  });

  it('NBD_OPT_EXPORT_NAME with a name that is not UTF-8: the server hangs up without the export', async () => {
    const raw = await rawHello(path);
    raw.write(optionFrame(OPT.EXPORT_NAME, E_FF));
    // The export's size and flags would come first; a hang-up fails the read.
    expect(await raw.read(1).then(() => 'export info', () => 'hung up')).toBe('hung up');
  });

  it('the export named e\\uFFFD in valid UTF-8 is served (control)', async () => {
    const raw = await structuredSession();
    expect(await option(raw, OPT.GO, infoRequest(Buffer.from('e\uFFFD')))).toEqual([{ type: REP.INFO }, { type: REP.ACK }]);
    raw.socket.destroy();
  });
});

describe('NbdServer export names that are not NBD strings', () => {
  const backend = { size: SIZE, read: async (_o: number, l: number) => Buffer.alloc(l) };
  it.each([
    ['a NUL', 'a\0b', /export name .* contains NUL/],
    ['4097 bytes', 'x'.repeat(4097), /export name .* is 4097 bytes, over 4096/],
    ['4097 bytes of multi-byte UTF-8', 'x' + 'é'.repeat(2048), /export name .* is 4097 bytes, over 4096/],
  ])('a name with %s is INVALID_INPUT at construction (no client could ask for it)', (_what, name, message) => {
    expect(() => new NbdServer({ exports: [{ name, backend }] })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', message: expect.stringMatching(message) }));
  });

  // 63 characters, then one outside the BMP (two UTF-16 units), then more: a cut at 64 UTF-16
  // units split it, and the message showed a lone surrogate (`\ud83d`).
  const long = 'x'.repeat(63) + '\u{1F600}' + 'y'.repeat(20);
  const shown = `"${'x'.repeat(63)}\u{1F600}"… (85 characters)`;

  it('the message shows at most 64 characters of a bad name, none of them split, and the whole length', () => {
    let message = '';
    try {
      new NbdServer({ exports: [{ name: long + '\0', backend }] });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain(`export name ${shown} contains NUL`);
  });

  it('a duplicate name is shown cut as well', () => {
    expect(() => new NbdServer({ exports: [{ name: long, backend }, { name: long, backend }] })).toThrow(
      expect.objectContaining({ code: 'INVALID_INPUT', message: expect.stringContaining(`duplicate export name ${shown.replace('85', '84')}`) }),
    );
  });

  it('a name of 4096 bytes is served (control)', () => {
    expect(() => new NbdServer({ exports: [{ name: 'x'.repeat(4096), backend }] })).not.toThrow();
  });
});
