// The QMP line splitter must cost time linear in the bytes received: a long line arriving in
// socket-sized pieces (a large query reply, or a peer that never sends a newline) used to be
// rescanned and re-copied whole on every piece, blocking the event loop for seconds (16 MiB in
// 64 KiB pieces: ~7.6 s here; up to the 64 MiB limit: minutes) before it was parsed or refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient } from '../src/index.js';
import { JsonLineDecoder, type JsonLineFailure } from '../src/json-lines.js';
import { answerReturn, FakeQmpPeers } from './helpers.js';

const MiB = 1024 * 1024;
const PIECE = 64 * 1024;

const peers = new FakeQmpPeers();

beforeAll(() => peers.open());
afterAll(() => peers.close());

/** Feeds `bytes` to `decoder` in PIECE-sized chunks until a failure; returns the messages, the failure and the time taken. */
function feed(decoder: JsonLineDecoder, bytes: Buffer): { messages: unknown[]; failure?: JsonLineFailure; ms: number } {
  const started = performance.now();
  const messages: unknown[] = [];
  let failure: JsonLineFailure | undefined;
  for (let at = 0; at < bytes.length && !failure; at += PIECE) {
    const batch = decoder.push(bytes.subarray(at, at + PIECE));
    messages.push(...batch.messages);
    failure = batch.failure;
  }
  return { messages, failure, ms: performance.now() - started };
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

  it('a line over the limit is refused with a RangeError failure once the limit is passed, in linear time', () => {
    const decoder = new JsonLineDecoder(16 * MiB);
    const { messages, failure, ms } = feed(decoder, Buffer.alloc(17 * MiB, 0x61));
    expect(messages).toEqual([]);
    expect(failure?.error).toBeInstanceOf(RangeError);
    expect(failure?.line).toMatch(/^"a{100,199}$/); // the start of the line, JSON-quoted, cut to 200 characters
    expect(ms).toBeLessThan(1_500);
  });

  it('counts the limit in bytes, keeps multi-byte characters split across pieces, and splits lines anywhere', () => {
    const decoder = new JsonLineDecoder(8);
    expect(decoder.push(Buffer.from('"ééééé"')).failure?.error).toBeInstanceOf(RangeError); // 7 characters, 12 bytes
    const d2 = new JsonLineDecoder();
    const line = Buffer.from('{"a":"é€😀"}\n\n{"b":1}\r\n{"c"');
    const out: unknown[] = [];
    for (let i = 0; i < line.length; i++) out.push(...d2.push(line.subarray(i, i + 1)).messages);
    expect(out).toEqual([{ a: 'é€😀' }, { b: 1 }]);
    expect(d2.push(Buffer.from(':2}\n'))).toEqual({ messages: [{ c: 2 }] });
  });
});

describe('JsonLineDecoder with a bad line', () => {
  it('returns the lines before a line that is not JSON, then the failure naming that line, and nothing after', () => {
    const decoder = new JsonLineDecoder();
    const batch = decoder.push(Buffer.from('{"return": {}, "id": "a"}\r\n\r\n{"event": "E"}\r\nnot json at all\r\n{"return": 2, "id": "b"}\r\n'));
    expect(batch.messages).toEqual([{ return: {}, id: 'a' }, { event: 'E' }]);
    expect(batch.failure?.error).toBeInstanceOf(SyntaxError);
    expect(batch.failure?.line).toBe('"not json at all"');
    expect(decoder.push(Buffer.from('{"return": 3, "id": "c"}\n'))).toEqual({ messages: [] });
  });

  it('returns the lines before a line that grows past the limit in the same chunk', () => {
    const decoder = new JsonLineDecoder(16);
    const batch = decoder.push(Buffer.from('{"a":1}\n{"b":"0123456789abcdef"}\n'));
    expect(batch.messages).toEqual([{ a: 1 }]);
    expect(batch.failure?.error).toBeInstanceOf(RangeError);
    expect(batch.failure?.line).toBe(JSON.stringify('{"b":"0123456789abcdef"}')); // its start (up to 200 bytes), JSON-quoted
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
