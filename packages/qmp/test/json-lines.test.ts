// The QMP line splitter must cost time linear in the bytes received: a long line arriving in
// socket-sized pieces (a large query reply, or a peer that never sends a newline) used to be
// rescanned and re-copied whole on every piece, blocking the event loop for seconds (16 MiB in
// 64 KiB pieces: ~7.6 s here; up to the 64 MiB limit: minutes) before it was parsed or refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient } from '../src/index.js';
import { JsonLineDecoder } from '../src/json-lines.js';
import { answerReturn, FakeQmpPeers } from './helpers.js';

const MiB = 1024 * 1024;
const PIECE = 64 * 1024;

const peers = new FakeQmpPeers();

beforeAll(() => peers.open());
afterAll(() => peers.close());

/** Feeds `bytes` to `decoder` in PIECE-sized chunks; returns the messages and the time taken. */
function feed(decoder: JsonLineDecoder, bytes: Buffer): { messages: unknown[]; ms: number } {
  const started = performance.now();
  const messages: unknown[] = [];
  for (let at = 0; at < bytes.length; at += PIECE) messages.push(...decoder.push(bytes.subarray(at, at + PIECE)));
  return { messages, ms: performance.now() - started };
}

describe('JsonLineDecoder', () => {
  it('a 16 MiB line in 64 KiB pieces is parsed in linear time', () => {
    const text = 'x'.repeat(16 * MiB);
    const { messages, ms } = feed(new JsonLineDecoder(), Buffer.from(`{"return": "${text}", "id": "a"}\r\n{"event": "E"}\n`));
    expect(messages).toHaveLength(2);
    expect((messages[0] as { return: string }).return.length).toBe(text.length);
    expect(messages[1]).toEqual({ event: 'E' });
    expect(ms).toBeLessThan(1_500);
  });

  it('a line over the limit is refused with a RangeError once the limit is passed, in linear time', () => {
    const decoder = new JsonLineDecoder(16 * MiB);
    const started = performance.now();
    expect(() => feed(decoder, Buffer.alloc(17 * MiB, 0x61))).toThrow(RangeError);
    expect(performance.now() - started).toBeLessThan(1_500);
  });

  it('counts the limit in bytes, keeps multi-byte characters split across pieces, and splits lines anywhere', () => {
    const decoder = new JsonLineDecoder(8);
    expect(() => decoder.push(Buffer.from('"ééééé"'))).toThrow(RangeError); // 7 characters, 12 bytes
    const d2 = new JsonLineDecoder();
    const line = Buffer.from('{"a":"é€😀"}\n\n{"b":1}\r\n{"c"');
    const out: unknown[] = [];
    for (let i = 0; i < line.length; i++) out.push(...d2.push(line.subarray(i, i + 1)));
    expect(out).toEqual([{ a: 'é€😀' }, { b: 1 }]);
    expect(d2.push(Buffer.from(':2}\n'))).toEqual([{ c: 2 }]);
  });
});

describe('QmpClient with a large reply', () => {
  it('a 24 MiB reply line arriving in socket-sized pieces resolves its call within 3 s', async () => {
    const big = 'y'.repeat(24 * MiB);
    const { path } = await peers.listen((m, s) => answerReturn(s, m, m.execute === 'x-big' ? big : {}));
    const client = await QmpClient.connect({ path });
    try {
      const started = performance.now();
      const got = await client.execute<string>('x-big', {}, { timeoutMs: 60_000 });
      expect(got.length).toBe(big.length);
      expect(performance.now() - started).toBeLessThan(3_000);
    } finally {
      await client.close();
    }
  });
});
