// proto.md, Conventions: a string "is a sequence of UTF-8 code points, which is not `NUL`
// terminated, MUST NOT contain `NUL` characters, SHOULD be no longer than 256 bytes and MUST be no
// longer than 4096 bytes"; NBD_REP_META_CONTEXT's name "MUST be valid UTF-8 data". NbdClient holds
// the server's strings to that: an NBD_REP_SERVER export name that is not valid UTF-8 or has a NUL,
// and an NBD_REP_META_CONTEXT name with a NUL, are protocol violations: CORRUPT and a hard
// disconnect (no NBD_OPT_ABORT, no NBD_OPT_GO), as for the other malformed option replies
// (client-meta-context-utf8.test.ts has meta context names that are not UTF-8). Scripted servers
// over Unix sockets.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { expectContextNameRefused, serveNames } from './helpers/names-server.js';
import { ScriptedServers } from './helpers/scripted-servers.js';

// Numbers from proto.md.
const OPT = { ABORT: 2, LIST: 3, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 };

const scripted = new ScriptedServers('nbd-str-');
beforeAll(() => scripted.open());
afterAll(() => scripted.close());

const GOOD = Buffer.from('base:allocation');

// Export names that are not NBD strings: not UTF-8 (a lone 0xff, a character cut short), or with a NUL.
const BAD_EXPORT: Array<[string, Buffer, RegExp]> = [
  ['0xff', Buffer.from([0x65, 0xff]), /NBD_REP_SERVER: export name is not valid UTF-8/],
  ['truncated', Buffer.from([0x65, 0xe2, 0x82]), /NBD_REP_SERVER: export name is not valid UTF-8/],
  ['NUL inside', Buffer.from('disk\0two'), /NBD_REP_SERVER: export name contains NUL/],
  ['NUL terminated', Buffer.from('disk\0'), /NBD_REP_SERVER: export name contains NUL/],
];

// Meta context names with a NUL (valid UTF-8, so only the NUL rule catches them).
const NUL_CONTEXT: Array<[string, Buffer]> = [
  ['NUL inside', Buffer.from('base:allocation\0x')],
  ['NUL terminated', Buffer.from('base:allocation\0')],
];

describe('NbdClient and server strings that are not NBD strings', () => {
  it.each(BAD_EXPORT)('listExports, NBD_REP_SERVER name %s: CORRUPT, hard disconnect (no NBD_OPT_ABORT)', async (_what, name, message) => {
    const { path, seen, closed } = await serveNames(scripted, name, GOOD);
    await expect(NbdClient.listExports({ path, connectTimeoutMs: 10_000 })).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringMatching(message) });
    await closed;
    expect(seen).toEqual([OPT.LIST]);
  });

  it.each(NUL_CONTEXT)('connect (NBD_OPT_SET_META_CONTEXT), context name %s: CORRUPT, hard disconnect before NBD_OPT_GO', async (_what, name) => {
    await expectContextNameRefused(scripted, name, 'connect', /NBD_REP_META_CONTEXT: context name contains NUL/);
  });

  it.each(NUL_CONTEXT)('listMetaContexts (NBD_OPT_LIST_META_CONTEXT), context name %s: CORRUPT, hard disconnect', async (_what, name) => {
    await expectContextNameRefused(scripted, name, 'listMetaContexts', /NBD_REP_META_CONTEXT: context name contains NUL/);
  });

  it('multi-byte UTF-8 export and context names are taken as sent, then NBD_OPT_ABORT (control)', async () => {
    const exportName = 'dïsk-😀';
    const contextName = 'x-é:ü';
    const listed = await serveNames(scripted, Buffer.from(exportName), Buffer.from(contextName));
    expect(await NbdClient.listExports({ path: listed.path, connectTimeoutMs: 10_000 })).toEqual([exportName]);
    await listed.closed;
    expect(listed.seen).toEqual([OPT.LIST, OPT.ABORT]);
    const contexts = await serveNames(scripted, Buffer.from(exportName), Buffer.from(contextName));
    expect(await NbdClient.listMetaContexts({ path: contexts.path, connectTimeoutMs: 10_000 }, exportName)).toEqual([contextName]);
  });
});
