import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient } from '../src/index.js';
import { answerReturn, FakeQmpPeers } from './helpers.js';

// `whenClosed` resolves undefined for a deliberate close (close(), or a hang-up after `quit`).
// A `quit` that failed (an error reply), timed out or was aborted is no quit: a later hang-up is
// a lost connection and must resolve with the UNAVAILABLE error.
const peers = new FakeQmpPeers();

beforeAll(() => peers.open());
afterAll(() => peers.close());

type QuitAnswer = 'error' | 'silent' | 'ok';

/** A fake QMP server: greets, answers `quit` per `answer`, `{}` to anything else; `hangUp()` drops every connection. */
async function fakeQmp(answer: QuitAnswer): Promise<{ path: string; hangUp: () => void }> {
  const { path, sockets } = await peers.listen((m, s) => {
    if (m.execute !== 'quit') answerReturn(s, m);
    else if (answer === 'error') s.write(`${JSON.stringify({ error: { class: 'GenericError', desc: 'quit refused' }, id: m.id })}\r\n`);
    else if (answer === 'ok') {
      answerReturn(s, m);
      s.end();
    }
  });
  return { path, hangUp: () => sockets.forEach((s) => s.destroy()) };
}

describe('QmpClient quit and whenClosed', () => {
  it('a quit answered with an error does not make a later hang-up deliberate', async () => {
    const peer = await fakeQmp('error');
    const client = await QmpClient.connect({ path: peer.path });
    await expect(client.execute('quit')).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await client.execute('query-version'); // still connected and working
    peer.hangUp();
    expect(await client.whenClosed).toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('a quit that timed out does not make a later hang-up deliberate', async () => {
    const peer = await fakeQmp('silent');
    const client = await QmpClient.connect({ path: peer.path });
    await expect(client.execute('quit', undefined, { timeoutMs: 50 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    peer.hangUp();
    expect(await client.whenClosed).toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('a quit that was aborted does not make a later hang-up deliberate', async () => {
    const peer = await fakeQmp('silent');
    const client = await QmpClient.connect({ path: peer.path });
    const ac = new AbortController();
    const quit = client.execute('quit', undefined, { signal: ac.signal });
    ac.abort();
    await expect(quit).rejects.toMatchObject({ code: 'CANCELLED' });
    peer.hangUp();
    expect(await client.whenClosed).toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('a hang-up while quit is pending, or after it succeeded, is deliberate', async () => {
    const pending = await fakeQmp('silent');
    const a = await QmpClient.connect({ path: pending.path });
    const quit = a.execute('quit');
    await new Promise((r) => setTimeout(r, 20));
    pending.hangUp();
    await expect(quit).resolves.toEqual({});
    expect(await a.whenClosed).toBeUndefined();

    const ok = await fakeQmp('ok');
    const b = await QmpClient.connect({ path: ok.path });
    await expect(b.execute('quit')).resolves.toEqual({});
    expect(await b.whenClosed).toBeUndefined();
  });
});
