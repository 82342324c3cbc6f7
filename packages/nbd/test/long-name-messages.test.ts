// Messages echo names from the other side, or from the caller, cut (core's quotedCut, SHOWN_NAME
// code points): an export name may be 4096 bytes, and the server's "no export" reply and the
// client's error quoting it would otherwise carry all of it. The server's reply is read raw; the
// client's error from NbdClient.connect against the same server.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { optionFrame as option, optionReplies, rawHello, u16, u32 } from './helpers/raw-nbd.js';
import { serveOnSocket, type SocketServer } from './helpers/socket-server.js';

// Numbers from proto.md.
const OPT_GO = 7;
const REP_ERR_UNKNOWN = 0x80000006;

let served: SocketServer;
beforeAll(async () => {
  served = await serveOnSocket('nbd-long-', 1 << 20);
});
afterAll(() => served?.close());

describe('names echoed in messages are cut', () => {
  it("the server's NBD_REP_ERR_UNKNOWN for a 4096-byte export name quotes its first 64 characters and its length", async () => {
    const raw = await rawHello(served.path);
    const name = Buffer.alloc(4096, 'a');
    raw.write(option(OPT_GO, Buffer.concat([u32(name.length), name, u16(0)])));
    const { type, body } = (await optionReplies(raw, OPT_GO)).at(-1)!;
    raw.socket.destroy();
    expect(type).toBe(REP_ERR_UNKNOWN);
    expect(body.toString('utf8')).toBe(`no export "${'a'.repeat(64)}"… (4096 characters)`);
  });

  it("NbdClient.connect to a missing 2000-character export (4000 bytes): the error quotes the name cut, both the client's and the server's part", async () => {
    const exportName = 'é'.repeat(2000);
    const err = await NbdClient.connect({ path: served.path, exportName, connectTimeoutMs: 10_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    const shown = `"${'é'.repeat(64)}"… (2000 characters)`;
    expect(err).toMatchObject({ code: 'NOT_FOUND', message: `[nbd] export ${shown} refused by the server (reply 6): no export ${shown}` });
  });
});
