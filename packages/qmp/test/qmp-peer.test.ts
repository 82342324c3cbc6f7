import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient } from '../src/index.js';
import { answerReturn, FakeQmpPeers } from './helpers.js';

// A misbehaving QMP peer must never crash the process: whatever it sends after the handshake,
// the client fails its calls and closes with UNAVAILABLE.
const peers = new FakeQmpPeers();

beforeAll(() => peers.open());
afterAll(() => peers.close());

/** A fake QMP server: greets, answers every command with `{}`, and sends `reply` after `query-version`'s answer. */
async function fakeQmp(reply: string): Promise<string> {
  const { path } = await peers.listen((m, s) => {
    if (m.execute === 'query-version') s.write(`${reply}\r\n`);
    else answerReturn(s, m);
  });
  return path;
}

describe('QmpClient with a misbehaving peer', () => {
  for (const reply of ['null', '42', '"text"', 'true', '[]']) {
    it(`a JSON line that is not an object (${reply}) closes the client with UNAVAILABLE and fails the pending call`, async () => {
      const uncaught: unknown[] = [];
      const onUncaught = (err: unknown): void => void uncaught.push(err);
      process.on('uncaughtException', onUncaught);
      try {
        const client = await QmpClient.connect({ path: await fakeQmp(reply) });
        await expect(client.execute('query-version', undefined, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
        expect(client.closed).toBe(true);
        expect(await client.whenClosed).toMatchObject({ code: 'UNAVAILABLE' });
        await expect(client.execute('query-version')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      } finally {
        process.off('uncaughtException', onUncaught);
      }
      expect(uncaught).toEqual([]);
    });
  }
});
