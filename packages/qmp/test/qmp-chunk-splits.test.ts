import type net from 'node:net';
import { setImmediate as turn } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient, type QmpEvent } from '../src/index.js';
import { answerReturn, FakeQmpPeers, type QmpCommand } from './helpers.js';

// Replies and events as they may reach the client over a real unix socket: several in one read,
// one spread over many, a cut between `\r` and `\n` or inside a multi-byte character, a large
// event before the reply a caller waits for, replies in another order than the calls. Every
// reply must reach its own caller, every event its listener, in wire order, nothing dropped.
const peers = new FakeQmpPeers();
beforeAll(() => peers.open());
afterAll(() => peers.close());

const event = (id: string, pad: string): string =>
  JSON.stringify({ event: 'BLOCK_EXPORT_DELETED', data: { id, pad }, timestamp: { seconds: 1, microseconds: 2 } });
/** ~1 MiB of text with 2-, 3- and 4-byte UTF-8 characters. */
const BIG = 'é€𝄞x'.repeat(100_000);

/** The offsets `i + shift` of `w` where `at(i)` holds. */
function offsets(w: Buffer, at: (i: number) => boolean, shift: number): number[] {
  const found: number[] = [];
  for (let i = 0; i < w.length; i++) if (at(i)) found.push(i + shift);
  return found;
}

/** Where to cut the wire bytes `wire` into the pieces the peer writes one by one. */
type Splitter = (wire: Buffer) => number[];
const SPLITS: Array<[string, Splitter]> = [
  ['all in one write', () => []],
  ['one byte per write for the first 300 bytes', () => Array.from({ length: 300 }, (_, i) => i + 1)],
  ['every cut between \\r and \\n', (w) => offsets(w, (i) => w[i] === 0x0a && w[i - 1] === 0x0d, 0)],
  ['cuts inside the first 50 four-byte characters', (w) => offsets(w, (i) => w[i]! >= 0xf0, 2).slice(0, 50)],
  ['every 4093 bytes', (w) => Array.from({ length: Math.floor(w.length / 4093) }, (_, i) => (i + 1) * 4093)],
];

describe('QmpClient reading replies and events in awkward splits', () => {
  for (const [what, split] of SPLITS) {
    it(`three calls answered out of order around two large events (${what}): each caller gets its own reply, the events arrive whole and in order`, async () => {
      const held: QmpCommand[] = [];
      const { path } = await peers.listen((m: QmpCommand, s: net.Socket) => {
        if (!m.execute.startsWith('x-')) return answerReturn(s, m);
        held.push(m);
        if (held.length < 3) return;
        const [a, b, c] = held as [QmpCommand, QmpCommand, QmpCommand];
        const reply = (x: QmpCommand): string => JSON.stringify({ return: { for: x.execute }, id: x.id });
        const wire = Buffer.from(`${event('e1', BIG)}\r\n${reply(c)}\r\n${reply(a)}\r\n${event('e2', `${BIG}z`)}\r\n${reply(b)}\r\n`);
        void (async () => {
          let at = 0;
          for (const cut of [...split(wire), wire.length]) {
            if (cut <= at) continue;
            s.write(wire.subarray(at, cut));
            at = cut;
            await turn(); // lets the client read what was written so far
          }
        })();
      });
      const client = await QmpClient.connect({ path });
      try {
        const events: QmpEvent[] = [];
        client.on('BLOCK_EXPORT_DELETED', (e) => events.push(e));
        const calls = ['x-a', 'x-b', 'x-c'].map((name) => client.execute<{ for: string }>(name, {}, { timeoutMs: 20_000 }));
        expect(await Promise.all(calls)).toEqual([{ for: 'x-a' }, { for: 'x-b' }, { for: 'x-c' }]);
        expect(events.map((e) => [e.data.id, e.data.pad])).toEqual([
          ['e1', BIG],
          ['e2', `${BIG}z`],
        ]);
        expect(client.droppedReplies).toBe(0);
        expect(client.closed).toBe(false);
      } finally {
        await client.close();
      }
    });
  }

  it('a greeting written one byte at a time is read whole; connect completes', async () => {
    const greeting = JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'é' }, capabilities: ['oob'] } });
    const { path, sockets } = await peers.listen((m, s) => answerReturn(s, m), '');
    const connecting = QmpClient.connect({ path }, { timeoutMs: 20_000 });
    while (sockets.length === 0) await turn();
    for (const byte of Buffer.from(`${greeting}\r\n`)) {
      sockets[0]!.write(Buffer.of(byte));
      await turn();
    }
    const client = await connecting;
    try {
      expect(client.greeting).toEqual({ version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'é' }, capabilities: ['oob'] });
    } finally {
      await client.close();
    }
  });
});
