// The strings NbdClient sends are NBD strings too (proto.md, Conventions: "a sequence of UTF-8 code
// points, which is not `NUL` terminated, MUST NOT contain `NUL` characters ... and MUST be no
// longer than 4096 bytes"). An export name, meta context or query that is not one is refused with
// INVALID_INPUT naming the field (`details.field`), before the client connects: a lone surrogate
// used to go out as U+FFFD and open another export (`e\uFFFD`, served here), and NUL or an
// oversize name got whatever the server made of it. Against NbdServer over a Unix socket
// (qemu-storage-daemon.test.ts has the same against qemu's server).
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, NbdServer } from '../src/index.js';
import { serveOnSocket, type SocketServer } from './helpers/socket-server.js';

const SIZE = 1 << 20;

let served: SocketServer;
let path: string;
beforeAll(async () => {
  served = await serveOnSocket('nbd-cstr-', SIZE, 0, ['e', 'e\uFFFD']);
  path = served.path;
});
afterAll(() => served?.close());

// Strings that are not NBD strings, and why (the end of the message).
const BAD: Array<[string, string, RegExp]> = [
  ['a lone surrogate', 'e\uD800', /is not valid UTF-8 \(it holds a lone surrogate\)$/],
  ['a lone low surrogate', '\uDC00e', /is not valid UTF-8/],
  ['NUL inside', 'e\0e', /contains NUL$/],
  ['NUL terminated', 'e\0', /contains NUL$/],
  ['4097 bytes', 'x'.repeat(4097), /is 4097 bytes, over 4096$/],
  ['4097 bytes of multi-byte UTF-8', 'x' + 'é'.repeat(2048), /is 4097 bytes, over 4096$/],
];

const refused = (field: string, message: RegExp) => ({ code: 'INVALID_INPUT', message: expect.stringMatching(message), details: { field } });

describe('NbdClient refuses to send strings that are not NBD strings', () => {
  it.each(BAD)('connect, exportName with %s: INVALID_INPUT naming exportName', async (_what, name, message) => {
    await expect(NbdClient.connect({ path, exportName: name, connectTimeoutMs: 10_000 })).rejects.toMatchObject(refused('exportName', message));
  });

  it.each(BAD)('connect, a meta context with %s: INVALID_INPUT naming its index', async (_what, context, message) => {
    await expect(NbdClient.connect({ path, exportName: 'e', metaContexts: ['base:allocation', context], connectTimeoutMs: 10_000 })).rejects.toMatchObject(
      refused('metaContexts[1]', message),
    );
  });

  it.each(BAD)('listMetaContexts, exportName or a query with %s: INVALID_INPUT naming it', async (_what, bad, message) => {
    await expect(NbdClient.listMetaContexts({ path, connectTimeoutMs: 10_000 }, bad, [])).rejects.toMatchObject(refused('exportName', message));
    await expect(NbdClient.listMetaContexts({ path, connectTimeoutMs: 10_000 }, 'e', ['base:', bad])).rejects.toMatchObject(refused('queries[1]', message));
  });

  it('refuses before connecting: a path where nothing listens gives INVALID_INPUT, not UNAVAILABLE', async () => {
    const nowhere = { path: join(dirname(path), 'nobody.sock'), connectTimeoutMs: 10_000 };
    await expect(NbdClient.connect({ ...nowhere, exportName: 'e\0' })).rejects.toMatchObject(refused('exportName', /contains NUL/));
    await expect(NbdClient.listMetaContexts(nowhere, 'e', ['base:\0'])).rejects.toMatchObject(refused('queries[0]', /contains NUL/));
    await expect(NbdClient.connect({ ...nowhere, exportName: 'e' })).rejects.toMatchObject({ code: 'UNAVAILABLE' }); // control
  });

  it('the message shows at most 64 characters of the string, none of them split, and the whole length', async () => {
    // A cut at 64 UTF-16 units split the character outside the BMP and showed a lone surrogate.
    const name = 'x'.repeat(63) + '\u{1F600}' + 'y'.repeat(20) + '\0';
    await expect(NbdClient.connect({ path, exportName: name, connectTimeoutMs: 10_000 })).rejects.toMatchObject(
      refused('exportName', new RegExp(`exportName "x{63}\u{1F600}"… \\(85 characters\\) contains NUL$`, 'u')),
    );
  });

  it('metaContexts that is not an array of strings is INVALID_INPUT', async () => {
    const bad = { path, exportName: 'e', metaContexts: 'base:allocation' } as unknown as Parameters<typeof NbdClient.connect>[0];
    await expect(NbdClient.connect(bad)).rejects.toMatchObject(refused('metaContexts', /must be an array/));
    const notString = { path, exportName: 'e', metaContexts: [7] } as unknown as Parameters<typeof NbdClient.connect>[0];
    await expect(NbdClient.connect(notString)).rejects.toMatchObject(refused('metaContexts[0]', /is not a string/));
  });

  it('names of 4096 bytes, and U+FFFD itself, are sent (control)', async () => {
    const c = await NbdClient.connect({ path, exportName: 'e\uFFFD', metaContexts: ['base:allocation', 'x:' + 'y'.repeat(4094)], connectTimeoutMs: 10_000 });
    expect(c.exportName).toBe('e\uFFFD');
    expect([...c.metaContexts.keys()]).toEqual(['base:allocation']);
    await c.disconnect();
  });
});

describe('NbdServer export names with a lone surrogate', () => {
  it('are INVALID_INPUT at construction (no client could name them: UTF-8 cannot hold one)', () => {
    const backend = { size: SIZE, read: async (_o: number, l: number) => Buffer.alloc(l) };
    expect(() => new NbdServer({ exports: [{ name: 'e\uD800', backend }] })).toThrow(
      expect.objectContaining({ code: 'INVALID_INPUT', message: expect.stringMatching(/export name .* is not valid UTF-8/) }),
    );
  });
});
