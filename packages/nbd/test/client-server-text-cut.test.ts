// The client's errors show a server's free text cut (core's cutText, SHOWN_MESSAGE code points):
// an NBD_REP_ERR reply may carry up to 64 KiB of message, an error chunk up to 4096 bytes, and a
// hostile or broken server sends all of it. Scripted servers send the longest message each allows
// (an option reply of MAX_OPTION_DATA bytes, an error chunk message of 4096 bytes). The text shown
// has its control, separator and bidi characters escaped, unquoted (core's escapedCut): a server's
// line feed or ESC must not start a forged line in a log or an API response carrying the error.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { chunk, DONE, ERROR, errorBody, fakeServer, RawSocket, serveOptions } from './helpers/raw-nbd.js';
import { ScriptedServers } from './helpers/scripted-servers.js';

// Numbers from proto.md.
const OPT_LIST = 3;
const OPT_STRUCTURED_REPLY = 8;
const REP_ERR_POLICY = 0x80000002;
const REP_ERR_UNKNOWN = 0x80000006;
const REP_ERR_SHUTDOWN = 0x80000007;
const EIO = 5;

/** Bytes (and characters) of the longest option reply message the client reads: MAX_OPTION_DATA. */
const LONGEST_REPLY = 64 * 1024;
/** What every error shows of a server's message cut: its first 200 characters and its length. */
const cutOf = (char: string, length: number): string => `${char.repeat(200)}… (${length} characters)`;

const scripted = new ScriptedServers('nbd-cut-');
beforeAll(() => scripted.open());
afterAll(() => scripted.close());

/** A server answering option `opt` with `type` and `message` (every other option: ACK). */
async function refusing(opt: number, type: number, message: string): Promise<string> {
  const server = net.createServer((s) => {
    scripted.track(s);
    s.on('error', () => undefined);
    const raw = new RawSocket(s);
    void serveOptions(s, raw, ({ opt: o, reply }) => {
      reply(o === opt ? type : 1, o === opt ? Buffer.from(message) : undefined);
      return false;
    }).catch(() => s.destroy());
  });
  return scripted.listen(server);
}

const failure = (p: Promise<unknown>): Promise<{ code?: string; message: string }> =>
  p.then(
    () => ({ message: 'fulfilled' }),
    (e: { code?: string; message: string }) => e,
  );

describe("a server's text in the client's errors is cut", () => {
  it('NBD_OPT_GO refused with NBD_REP_ERR_UNKNOWN and a 64 KiB message', async () => {
    const path = await refusing(7, REP_ERR_UNKNOWN, 'u'.repeat(LONGEST_REPLY));
    const err = await failure(NbdClient.connect({ path, exportName: 'e', structuredReplies: false }));
    expect(err).toMatchObject({ code: 'NOT_FOUND', message: `[nbd] export "e" refused by the server (reply 6): ${cutOf('u', LONGEST_REPLY)}` });
  });

  it('NBD_OPT_LIST refused with NBD_REP_ERR_POLICY and a 64 KiB message of multi-byte characters (cut on a character)', async () => {
    const path = await refusing(OPT_LIST, REP_ERR_POLICY, '€'.repeat(LONGEST_REPLY / 4)); // 3 bytes each
    const err = await failure(NbdClient.listExports({ path }));
    expect(err).toMatchObject({ code: 'INVALID_INPUT', message: `[nbd] NBD_OPT_LIST refused by the server (reply 2): ${cutOf('€', LONGEST_REPLY / 4)}` });
  });

  it('NBD_REP_ERR_SHUTDOWN with a 64 KiB message to NBD_OPT_STRUCTURED_REPLY', async () => {
    const path = await refusing(OPT_STRUCTURED_REPLY, REP_ERR_SHUTDOWN, 's'.repeat(LONGEST_REPLY));
    const err = await failure(NbdClient.listMetaContexts({ path }));
    expect(err).toMatchObject({ code: 'UNAVAILABLE', message: `[nbd] option ${OPT_STRUCTURED_REPLY} refused by the server (reply 7): ${cutOf('s', LONGEST_REPLY)}` });
  });

  it('a message up to 200 characters is shown whole', async () => {
    const path = await refusing(OPT_LIST, REP_ERR_POLICY, 'p'.repeat(200));
    const err = await failure(NbdClient.listExports({ path }));
    expect(err.message).toBe(`[nbd] NBD_OPT_LIST refused by the server (reply 2): ${'p'.repeat(200)}`);
  });

  it("a server's line feeds, ESC, C1, U+2028 and bidi override are escaped in the message, nothing quoted, and counted as one character each when cut", async () => {
    const evil = 'no\nerror [OK]: fake\r\x1b[2J\u009b\u2028\u202eq\\';
    const shown = 'no\\nerror [OK]: fake\\r\\u001b[2J\\u009b\\u2028\\u202eq\\';
    const path = await refusing(OPT_LIST, REP_ERR_POLICY, evil);
    const err = await failure(NbdClient.listExports({ path }));
    expect(err.message).toBe(`[nbd] NBD_OPT_LIST refused by the server (reply 2): ${shown}`);
    const long = await refusing(7, REP_ERR_UNKNOWN, '\n'.repeat(LONGEST_REPLY));
    const cut = await failure(NbdClient.connect({ path: long, exportName: 'e', structuredReplies: false }));
    expect(cut.message).toBe(`[nbd] export "e" refused by the server (reply 6): ${'\\n'.repeat(200)}… (${LONGEST_REPLY} characters)`);
  });

  it("an error chunk's message with a line feed and ESC: escaped in the READ's error", async () => {
    const server = fakeServer(
      1 << 20,
      async (s, raw) => {
        scripted.track(s);
        const req = await raw.read(28);
        s.write(chunk(req, DONE, ERROR, errorBody(EIO, 'disk gone\nerror [OK]: \x1b[31mfake')));
      },
      { structuredContextId: 1 },
    );
    const path = await scripted.listen(server);
    const client = await NbdClient.connect({ path });
    try {
      const err = await failure(client.read(0, 4096));
      expect(err).toMatchObject({ code: 'UNAVAILABLE', message: '[nbd] read failed with EIO: disk gone\\nerror [OK]: \\u001b[31mfake' });
    } finally {
      await client.disconnect().catch(() => undefined);
    }
  });

  it('an error chunk with a 4096-byte message to a READ', async () => {
    const server = fakeServer(
      1 << 20,
      async (s, raw) => {
        scripted.track(s);
        const req = await raw.read(28);
        s.write(chunk(req, DONE, ERROR, errorBody(EIO, 'm'.repeat(4096))));
      },
      { structuredContextId: 1 },
    );
    const path = await scripted.listen(server);
    const client = await NbdClient.connect({ path });
    try {
      const err = await failure(client.read(0, 4096));
      expect(err).toMatchObject({ code: 'UNAVAILABLE', message: `[nbd] read failed with EIO: ${cutOf('m', 4096)}` });
    } finally {
      await client.disconnect().catch(() => undefined);
    }
  });
});
