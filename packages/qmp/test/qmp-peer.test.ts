import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { QmpClient } from '../src/index.js';
import { answerReturn, FakeQmpPeers, type QmpCommand } from './helpers.js';

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

  // JSON.parse reads any depth, JSON.stringify throws past a few thousand levels: describing
  // such a line in the error used to throw out of the socket's data handler (an uncaught
  // exception, which ends a CLI or server process).
  for (const [what, line] of [
    ['an array', `${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}`],
    ['an object without a greeting', `{"a":${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}}`],
    ['an error body', `{"error":${'['.repeat(1_000_000)}${']'.repeat(1_000_000)},"id":"cairn-2"}`],
  ] as const) {
    it(`a line nested a million levels deep (${what}) fails the call or connect with a CairnError, nothing thrown out of the socket handler`, async () => {
      const uncaught: unknown[] = [];
      const onUncaught = (err: unknown): void => void uncaught.push(err);
      process.on('uncaughtException', onUncaught);
      try {
        if (what === 'an object without a greeting') {
          const { path } = await peers.listen(() => undefined, line);
          await expect(QmpClient.connect({ path }, { timeoutMs: 5_000 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
        } else {
          const client = await QmpClient.connect({ path: await fakeQmp(line) });
          const err = await client.execute('query-version', undefined, { timeoutMs: 5_000 }).catch((e: unknown) => e);
          expect(err).toMatchObject({ code: what === 'an array' ? 'UNAVAILABLE' : 'INVALID_INPUT' });
          await client.close();
        }
      } finally {
        process.off('uncaughtException', onUncaught);
      }
      expect(uncaught).toEqual([]);
    });
  }

  // A reply and a bad line in one socket chunk: the reply used to be lost with the chunk (its
  // caller got the connection failure, or waited for its timeout), since the decoder threw on
  // the bad line before returning the messages it had already finished.
  for (const [what, bad] of [
    ['a line that is not JSON', 'this is not json'],
    ['a line that is not an object', '[1,2]'],
  ] as const) {
    it(`a reply and ${what} in one chunk: the reply reaches its caller, then pending calls fail with UNAVAILABLE naming the line`, async () => {
      let held: { m: QmpCommand; s: net.Socket } | undefined;
      const { path } = await peers.listen((m, s) => {
        if (m.execute === 'x-held') held = { m, s };
        else if (m.execute === 'query-version') {
          // The reply, then the bad line, in one write (one chunk on a unix socket), while x-held is still pending.
          s.write(`${JSON.stringify({ return: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'p' }, id: m.id })}\r\n${bad}\r\n`);
        } else answerReturn(s, m);
      });
      const client = await QmpClient.connect({ path });
      const pendingHeld = client.execute('x-held', {}, { timeoutMs: 30_000 }).catch((e: unknown) => e);
      await vi.waitFor(() => expect(held).toBeDefined(), { timeout: 20_000 });
      const version = await client.execute('query-version', undefined, { timeoutMs: 5_000 });
      expect(version.package).toBe('p');
      const err = (await pendingHeld) as { code: string; message: string; cause?: { message?: string } };
      expect(err).toMatchObject({ code: 'UNAVAILABLE' });
      const closed = await client.whenClosed;
      expect(closed).toMatchObject({ code: 'UNAVAILABLE' });
      expect(closed?.message).toContain(bad);
      expect(err.cause).toBe(closed);
    });
  }
});
