// proto.md, NBD_REP_META_CONTEXT: the name "is not required to be a human-readable string, but it
// MUST be valid UTF-8 data". A name that is not would be decoded with U+FFFD in place of the bad
// bytes, so the client would take (or list) a context the server never named. NbdClient treats
// it as a protocol violation: CORRUPT and a hard disconnect (no NBD_OPT_ABORT, no NBD_OPT_GO), as
// for the other malformed option replies. Scripted servers over Unix sockets.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { expectContextNameRefused, serveNames } from './helpers/names-server.js';
import { ScriptedServers } from './helpers/scripted-servers.js';

const scripted = new ScriptedServers('nbd-mcu-');
beforeAll(() => scripted.open());
afterAll(() => scripted.close());

// Not UTF-8: a lone 0xff, an overlong '/', a UTF-16 surrogate, a character cut short.
const BAD: Array<[string, Buffer]> = [
  ['0xff', Buffer.concat([Buffer.from('base:allocation'), Buffer.from([0xff])])],
  ['overlong', Buffer.concat([Buffer.from('x-a:'), Buffer.from([0xc0, 0xaf])])],
  ['surrogate', Buffer.concat([Buffer.from('x-a:'), Buffer.from([0xed, 0xa0, 0x80])])],
  ['truncated', Buffer.concat([Buffer.from('x-a:'), Buffer.from([0xe2, 0x82])])],
];

describe('NbdClient and NBD_REP_META_CONTEXT names that are not UTF-8', () => {
  it.each(BAD)('connect (NBD_OPT_SET_META_CONTEXT), %s: CORRUPT, hard disconnect before NBD_OPT_GO', async (_what, name) => {
    await expectContextNameRefused(scripted, name, 'connect', /NBD_REP_META_CONTEXT: context name is not valid UTF-8/);
  });

  it.each(BAD)('listMetaContexts (NBD_OPT_LIST_META_CONTEXT), %s: CORRUPT, hard disconnect', async (_what, name) => {
    await expectContextNameRefused(scripted, name, 'listMetaContexts', /NBD_REP_META_CONTEXT: context name is not valid UTF-8/);
  });

  it('a valid multi-byte UTF-8 name is taken as sent (control)', async () => {
    const name = 'x-é:ü😀';
    const listed = await serveNames(scripted, Buffer.from('e'), Buffer.from(name));
    expect(await NbdClient.listMetaContexts({ path: listed.path, connectTimeoutMs: 10_000 }, '')).toEqual([name]);
    const selected = await serveNames(scripted, Buffer.from('e'), Buffer.from(name));
    const client = await NbdClient.connect({ path: selected.path, metaContexts: [name], connectTimeoutMs: 10_000 });
    expect([...client.metaContexts]).toEqual([[name, 1]]);
    await client.disconnect().catch(() => undefined);
  });
});
