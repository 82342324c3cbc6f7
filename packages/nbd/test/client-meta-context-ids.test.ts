// proto.md, NBD_OPT_SET_META_CONTEXT: the server "MUST reply with a number of
// NBD_REP_META_CONTEXT replies, one for each selected metadata context, each with a unique
// metadata context ID". A server that gives one id to two contexts would have NbdClient take one
// BLOCK_STATUS chunk as the status of both (base:allocation's as a dirty bitmap's); one that
// names a context twice gives it two ids. Either is the server breaking a MUST: CORRUPT at
// connect, before any block status is read.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { fakeServer, type FakeServerOptions } from './helpers/raw-nbd.js';
import { ScriptedServers } from './helpers/scripted-servers.js';

const scripted = new ScriptedServers('nbd-mci-');

beforeAll(() => scripted.open());
afterAll(() => scripted.close());

const BITMAP = 'qemu:dirty-bitmap:b';

/** A server granting base:allocation as id 5 plus `more`; transmission: hangs up on anything. */
function serve(more: FakeServerOptions['moreContexts']): Promise<string> {
  const server = fakeServer(
    1 << 20,
    async (s) => {
      scripted.track(s);
      s.end();
    },
    { structuredContextId: 5, moreContexts: more },
  );
  return scripted.listen(server);
}

describe('NbdClient holds NBD_REP_META_CONTEXT ids to proto.md', () => {
  it('one id for two contexts: CORRUPT', async () => {
    const path = await serve([[5, BITMAP]]);
    await expect(NbdClient.connect({ path, metaContexts: ['base:allocation', BITMAP], connectTimeoutMs: 10_000 })).rejects.toMatchObject({
      code: 'CORRUPT',
      message: expect.stringMatching(/id 5 given to both/),
    });
  });

  it('one context named twice (with another id): CORRUPT', async () => {
    const path = await serve([[6, 'base:allocation']]);
    await expect(NbdClient.connect({ path, metaContexts: ['base:allocation'], connectTimeoutMs: 10_000 })).rejects.toMatchObject({
      code: 'CORRUPT',
      message: expect.stringMatching(/given twice/),
    });
  });

  it('distinct ids: both contexts are taken', async () => {
    const path = await serve([[6, BITMAP]]);
    const client = await NbdClient.connect({ path, metaContexts: ['base:allocation', BITMAP], connectTimeoutMs: 10_000 });
    expect([...client.metaContexts]).toEqual([
      ['base:allocation', 5],
      [BITMAP, 6],
    ]);
    await client.disconnect().catch(() => undefined);
  });
});
