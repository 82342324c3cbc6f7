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

/**
 * Linear, not quadratic, without a wall-clock bound (a loaded machine makes any work slow): one
 * piece of work is compared with the same bytes as SMALLER pieces of 1/SMALLER the size each, in
 * the same test. Linear work costs the same both ways (ratio about 1); quadratic work costs
 * SMALLER times more as one piece (8). Both sides are the same amount of work, so neither is too
 * small to measure. Costs are this process's CPU time (not the wall clock: time the machine gives
 * other processes does not count), the least of a few runs. The bound, 4, lies between.
 */
const SMALLER = 8;
const MAX_RATIO = 4;
/** CPU time to refuse a line over a 16 MiB limit: 6–17 ms measured here, quadratic 650 ms. */
const MAX_REFUSING_MS = 300;

/** Runs `work` SMALLER times: the same bytes as one run of SMALLER times the size. */
const times = (work: () => unknown) => async (): Promise<void> => {
  for (let i = 0; i < SMALLER; i++) await work();
};

/** This process's CPU time in ms (user and system) that `work` took, the least of `runs` runs. */
async function cpuMs(work: () => unknown, runs = 3): Promise<number> {
  let least = Infinity;
  for (let i = 0; i < runs; i++) {
    const before = process.cpuUsage();
    await work();
    const used = process.cpuUsage(before);
    least = Math.min(least, (used.user + used.system) / 1000);
  }
  return least;
}

/** Feeds `bytes` to `decoder` in PIECE-sized chunks until a failure; returns the messages and the failure. */
function feed(decoder: JsonLineDecoder, bytes: Buffer): { messages: unknown[]; failure?: JsonLineFailure } {
  const messages: unknown[] = [];
  let failure: JsonLineFailure | undefined;
  for (let at = 0; at < bytes.length && !failure; at += PIECE) {
    const batch = decoder.push(bytes.subarray(at, at + PIECE));
    messages.push(...batch.messages);
    failure = batch.failure;
  }
  return { messages, failure };
}

describe('JsonLineDecoder', () => {
  it('a 16 MiB line in 64 KiB pieces is parsed in linear time', async () => {
    const line = (bytes: number) => Buffer.from(`{"return": "${'x'.repeat(bytes)}", "id": "a"}\r\n{"event": "E"}\n`);
    const [large, small] = [line(16 * MiB), line((16 * MiB) / SMALLER)];
    const { messages } = feed(new JsonLineDecoder(), large);
    expect(messages).toHaveLength(2);
    expect((messages[0] as { return: string }).return.length).toBe(16 * MiB);
    expect(messages[1]).toEqual({ event: 'E' });
    const [largeMs, smallMs] = [await cpuMs(() => feed(new JsonLineDecoder(), large)), await cpuMs(times(() => feed(new JsonLineDecoder(), small)))];
    expect(largeMs / Math.max(smallMs, 1), `${largeMs} ms of CPU for 16 MiB, ${smallMs} ms for ${SMALLER} lines of 1/${SMALLER}`).toBeLessThan(MAX_RATIO);
  });

  it('a line over the limit is refused with a RangeError failure once the limit is passed, in linear time', async () => {
    const { messages, failure } = feed(new JsonLineDecoder(16 * MiB), Buffer.alloc(17 * MiB, 0x61));
    expect(messages).toEqual([]);
    expect(failure?.error).toBeInstanceOf(RangeError);
    expect(failure?.line).toMatch(/^"a{100,199}$/); // the start of the line, JSON-quoted, cut to 200 characters
    // Refusing costs a scan of the bytes up to the limit: a few ms of CPU for 16 MiB, too little to
    // compare with a smaller run (ms of noise). A decoder that re-joined the line's pieces at each
    // one (quadratic) took 650 ms here, so the bound is the CPU time itself, far from either.
    const input = Buffer.alloc(17 * MiB, 0x61);
    const refusingMs = await cpuMs(() => feed(new JsonLineDecoder(16 * MiB), input));
    expect(refusingMs, `${refusingMs} ms of CPU to refuse a line over a 16 MiB limit`).toBeLessThan(MAX_REFUSING_MS);
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
  it('a 24 MiB reply line arriving in socket-sized pieces resolves its call in time linear in its size', async () => {
    const big = 'y'.repeat(24 * MiB);
    const small = big.slice(0, big.length / SMALLER);
    const { path } = await peers.listen((m, s) => answerReturn(s, m, m.execute === 'x-big' ? big : m.execute === 'x-small' ? small : {}));
    const client = await QmpClient.connect({ path });
    try {
      const got = await client.execute<string>('x-big', {}, { timeoutMs: 60_000 });
      expect(got.length).toBe(big.length);
      // CPU time of this process: the fake peer's writes are in it too, and are linear.
      const [largeMs, smallMs] = [await cpuMs(() => client.execute('x-big', {}, { timeoutMs: 60_000 })), await cpuMs(times(() => client.execute('x-small', {}, { timeoutMs: 60_000 })))];
      expect(largeMs / Math.max(smallMs, 1), `${largeMs} ms of CPU for 24 MiB, ${smallMs} ms for ${SMALLER} replies of 1/${SMALLER}`).toBeLessThan(MAX_RATIO);
    } finally {
      await client.close();
    }
  });
});
