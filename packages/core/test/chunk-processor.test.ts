import type { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { CairnError } from '../src/errors.js';
import { ChunkCodec } from '../src/repository/codec.js';
import { availableParallelism } from 'node:os';
import { ChunkProcessor, defaultChunkWorkers, MAX_DEFAULT_CHUNK_WORKERS } from '../src/repository/chunk-processor.js';
import { outputBytesPerChunk } from '../src/repository/chunk-tasks.js';

const chunkSize = 64 * 1024;
const settings = { compression: 'zstd' as const, chunkSize, idKey: Buffer.alloc(32, 1), dataKey: Buffer.alloc(32, 2) };

describe('ChunkProcessor on shared memory', () => {
  const pool = new ChunkProcessor(settings, 2);
  const inline = new ChunkProcessor(settings, 0);
  afterAll(async () => pool.close());

  const input = ChunkProcessor.buffer(4 * chunkSize);
  const text = Buffer.from('the quick brown fox jumps over the lazy disk '.repeat(2000));
  text.copy(input, 0, 0, chunkSize); // compressible
  input.fill(0, chunkSize, 2 * chunkSize); // zero
  for (let i = 2 * chunkSize; i < 4 * chunkSize; i++) input[i] = (i * 2654435761) >>> 24; // noisy

  it('process() in workers encodes in place into the caller\'s output; decode() restores every chunk exactly, as inline does', async () => {
    const output = ChunkProcessor.buffer(4 * outputBytesPerChunk(chunkSize));
    const chunks = await pool.process(input, output, [null, null, null, null]);
    expect(chunks.map((c) => c.zero)).toEqual([false, true, false, false]);
    expect(chunks[0]!.encoded!.length).toBeLessThan(chunkSize / 4); // compressed
    expect(chunks[0]!.encoded!.buffer).toBe(output.buffer); // a view, not a copy
    // Every payload (after nonce and type byte) starts on an 8-byte boundary.
    for (const c of chunks.filter((x) => x.encoded)) expect((c.encoded!.byteOffset + 13) % 8).toBe(0);
    // Same ids inline: the id depends only on the bytes and the key.
    const plainOut = Buffer.alloc(4 * ChunkCodec.maxEncodedLength(chunkSize));
    expect((await inline.process(Buffer.from(input), plainOut, [null, null, null, null])).map((c) => c.id)).toEqual(chunks.map((c) => c.id));

    // Lay the blobs out as a pack range and decode them back.
    const encoded = chunks.filter((c) => c.encoded);
    const range = ChunkProcessor.buffer(encoded.reduce((n, c) => n + c.encoded!.length, 0));
    let at = 0;
    const entries = encoded.map((c) => {
      c.encoded!.copy(range, at);
      const e = { offset: at, length: c.encoded!.length, id: c.id!, rawLength: chunkSize };
      at += c.encoded!.length;
      return e;
    });
    const plain = ChunkProcessor.buffer(entries.length * chunkSize);
    const decoded = await pool.decode(range, plain, entries);
    expect(decoded.map((d) => d.error)).toEqual([undefined, undefined, undefined]);
    expect(decoded[0]!.data!.equals(input.subarray(0, chunkSize))).toBe(true);
    expect(decoded[2]!.data!.equals(input.subarray(3 * chunkSize))).toBe(true);

    // A flipped byte is CORRUPT for that chunk only.
    range[entries[1]!.offset + 20]! ^= 1;
    const again = await pool.decode(range, plain, entries);
    expect(again.map((d) => d.error?.code)).toEqual([undefined, 'CORRUPT', undefined]);
  });

  it('a chunk equal to the parent\'s is reported same and not encoded', async () => {
    const output = ChunkProcessor.buffer(4 * outputBytesPerChunk(chunkSize));
    const first = await pool.process(input, output, [null, null, null, null]);
    const second = await pool.process(input, output, first.map((c) => c.id));
    expect(second.map((c) => c.same)).toEqual([true, false, true, true]);
    expect(second.every((c) => c.encoded === null)).toBe(true);
  });

  it('workers refuse memory they cannot share (INTERNAL), and an output region too small fails the batch', async () => {
    await expect(pool.process(Buffer.from(input), ChunkProcessor.buffer(4 * chunkSize * 2), [null, null, null, null])).rejects.toMatchObject({ code: 'INTERNAL' });
    await expect(pool.process(input, ChunkProcessor.buffer(chunkSize), [null, null, null, null])).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringMatching(/too small/) });
    // The failed batch did not take the pool down.
    const ok = await pool.process(input, ChunkProcessor.buffer(4 * outputBytesPerChunk(chunkSize)), [null, null, null, null]);
    expect(ok.filter((c) => c.encoded).length).toBe(3);
  });
});

describe('ChunkProcessor started before its settings are known (keys still being derived)', () => {
  const input = ChunkProcessor.buffer(2 * chunkSize);
  Buffer.from('settled late, encoded the same '.repeat(5000)).copy(input);

  for (const workers of [2, 0]) {
    it(`tasks given before the settings come wait for them, and encode as a pool started with them does (${workers ? 'workers' : 'inline'})`, async () => {
      let give!: (s: typeof settings) => void;
      const late = new ChunkProcessor(new Promise<typeof settings>((resolve) => (give = resolve)), workers);
      const early = new ChunkProcessor(settings, workers);
      try {
        const out = ChunkProcessor.buffer(2 * outputBytesPerChunk(chunkSize));
        const pending = late.process(input, out, [null, null]);
        let settled = false;
        void pending.then(() => (settled = true));
        await new Promise((r) => setTimeout(r, 50));
        expect(settled).toBe(false);
        give(settings);
        const [a, b] = [await pending, await early.process(input, ChunkProcessor.buffer(2 * outputBytesPerChunk(chunkSize)), [null, null])];
        expect(a.map((c) => c.id)).toEqual(b.map((c) => c.id));
        // And what it sealed opens with the settings' keys.
        const codec = new ChunkCodec(settings.idKey, settings.dataKey);
        const plain = Buffer.alloc(chunkSize);
        codec.decodeInto(a[0]!.encoded!, a[0]!.id!, plain);
        expect(plain.equals(input.subarray(0, chunkSize))).toBe(true);
      } finally {
        await Promise.all([late.close(), early.close()]);
      }
    });
  }

  it('when the settings fail (a wrong passphrase), every task fails with that error', async () => {
    const wrong = Object.assign(new Error('wrong passphrase'), { code: 'INVALID_INPUT' });
    const p = new ChunkProcessor(Promise.reject(wrong), 2);
    try {
      await expect(p.process(input, ChunkProcessor.buffer(2 * outputBytesPerChunk(chunkSize)), [null, null])).rejects.toBe(wrong);
    } finally {
      await p.close();
    }
  });
});

describe('ChunkProcessor when a worker dies', () => {
  // The pool's Worker objects, reached as the review's repros do (no test hook).
  const workersOf = (p: ChunkProcessor): Worker[] => (p as unknown as { workers: Worker[] }).workers;
  /** Rejects with 'hung' if `p` has not settled within `ms`: a task that never settles fails the test. */
  const within = <T>(p: Promise<T>, ms = 5000): Promise<T> =>
    Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`hung: not settled within ${ms} ms`)), ms).unref())]);
  /** Once `w` is handed its next task, `kill` it (the task posted first, so it dies running it). */
  const onNextTask = (w: Worker, kill: (w: Worker, post: (m: unknown) => void) => void): void => {
    const post = w.postMessage.bind(w);
    w.postMessage = (m: { kind?: string }) => {
      if (m.kind !== 'process' && m.kind !== 'decode') return post(m);
      w.postMessage = post;
      kill(w, post);
      post(m);
    };
  };

  const n = 32; // 2 MiB of noise a task: far longer to encode than terminate() takes
  const input = ChunkProcessor.buffer(n * chunkSize);
  for (let i = 0; i < input.length; i++) input[i] = (i * 2654435761 + 7) >>> 24;
  const expectedIds = (async () => (await new ChunkProcessor(settings, 0).process(Buffer.from(input), Buffer.alloc(n * ChunkCodec.maxEncodedLength(chunkSize)), Array(n).fill(null))).map((c) => c.id))();
  const job = (p: ChunkProcessor) => p.process(input, ChunkProcessor.buffer(n * outputBytesPerChunk(chunkSize)), Array(n).fill(null));
  /** The chunks are right: the ids inline gives, and each blob opens to its input. */
  const check = async (chunks: Awaited<ReturnType<typeof job>>): Promise<void> => {
    expect(chunks.map((c) => c.id)).toEqual(await expectedIds);
    const codec = new ChunkCodec(settings.idKey, settings.dataKey);
    const plain = Buffer.alloc(chunkSize);
    chunks.forEach((c, i) => {
      codec.decodeInto(c.encoded!, c.id!, plain);
      expect(plain.equals(input.subarray(i * chunkSize, (i + 1) * chunkSize))).toBe(true);
    });
  };
  const settled = <T>(p: Promise<T>) => within(p.then((value) => ({ value }), (error: unknown) => ({ error })));

  for (const [how, kill, message] of [
    ['exits without an error (terminate())', (w: Worker) => void w.terminate(), /chunk worker exited with code \d+/],
    // A configure message without settings makes the worker throw outside any task: a real uncaught error.
    ['throws (an uncaught error)', (_: Worker, post: (m: unknown) => void) => post({ kind: 'configure', settings: null }), /chunk worker failed: .*(null|undefined)/],
  ] as const) {
    it(`a worker that ${how} mid-task fails only its task (INTERNAL), the task on the other worker completes right, and later jobs work`, async () => {
      const pool = new ChunkProcessor(settings, 2);
      try {
        await within(Promise.all([job(pool), job(pool)])); // both workers up and busy once
        const [w0] = workersOf(pool);
        onNextTask(w0!, kill);
        const [a, b] = await Promise.all([settled(job(pool)), settled(job(pool))]);
        const outcomes = [a, b].map((x) => ('error' in x ? 'failed' : 'ok')).sort();
        expect(outcomes).toEqual(['failed', 'ok']);
        const failed = ('error' in a ? a.error : (b as { error: unknown }).error) as CairnError;
        expect(failed).toBeInstanceOf(CairnError);
        expect(failed.code).toBe('INTERNAL');
        expect(failed.message).toMatch(message);
        // The healthy worker's task was not given up on: its output is complete and right.
        await check(('value' in a ? a.value : (b as { value: Awaited<ReturnType<typeof job>> }).value));
        // The dead worker was replaced; jobs after it, two at a time, all work.
        for (let round = 0; round < 2; round++) for (const r of await within(Promise.all([job(pool), job(pool)]))) await check(r);
        expect(workersOf(pool)).toHaveLength(2);
        expect(workersOf(pool)).not.toContain(w0);
      } finally {
        await pool.close();
      }
    });
  }

  it('a worker that exits while idle is replaced, and does not hang the next job', async () => {
    const pool = new ChunkProcessor(settings, 1);
    try {
      await check(await within(job(pool)));
      await workersOf(pool)[0]!.terminate();
      await check(await within(job(pool)));
    } finally {
      await pool.close();
    }
  });

  /** Makes the pool's next workers fail to load (a script that throws), or load again (`undefined`). */
  const breakScript = (p: ChunkProcessor, broken: boolean): void => {
    const pool = p as unknown as { url: URL; realUrl?: URL };
    pool.realUrl ??= pool.url;
    pool.url = broken ? new URL('data:text/javascript,throw new Error("cannot start")') : pool.realUrl;
  };

  /** Resolves once the pool has no worker and starts none for 100 ms (it gave up); fails after 5 s. */
  const atRest = async (p: ChunkProcessor): Promise<void> => {
    for (const end = Date.now() + 5000; Date.now() < end; ) {
      if (workersOf(p).length === 0) {
        await new Promise((r) => setTimeout(r, 100));
        if (workersOf(p).length === 0) return;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error('the pool never gave up');
  };

  it('workers that cannot start are not respawned forever: a job tries a bounded number, then fails INTERNAL; an idle pool starts none', async () => {
    const pool = new ChunkProcessor(settings, 1);
    try {
      breakScript(pool, true);
      await workersOf(pool)[0]!.terminate();
      // Each job fails (its task on a worker that died loading, or given up on), none hangs, and
      // the pool gives up within a bounded number of starts.
      for (let i = 0; i < 3; i++) {
        await expect(within(job(pool))).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringMatching(/cannot start|gave up/) });
        await atRest(pool);
      }
      await new Promise((r) => setTimeout(r, 100));
      expect(workersOf(pool)).toHaveLength(0);
    } finally {
      await pool.close();
    }
  });

  it('a pool that gave up starts workers again for the next job: a long-running process recovers once they can start', async () => {
    const pool = new ChunkProcessor(settings, 2);
    try {
      breakScript(pool, true);
      await Promise.all(workersOf(pool).map((w) => w.terminate()));
      await atRest(pool);
      // The cause has passed (a transient shortage of threads or memory, a script being replaced).
      breakScript(pool, false);
      for (let round = 0; round < 2; round++) for (const r of await within(Promise.all([job(pool), job(pool)]))) await check(r);
      expect(workersOf(pool)).toHaveLength(2);
    } finally {
      await pool.close();
    }
  });

  it('close() rejects every pending task: running, queued, and waiting for settings', async () => {
    const pool = new ChunkProcessor(settings, 1);
    const late = new ChunkProcessor(new Promise<typeof settings>(() => {}), 1);
    const tasks = [job(pool), job(pool), job(late)].map(settled);
    await new Promise((r) => setTimeout(r, 10));
    await within(Promise.all([pool.close(), late.close()]));
    for (const t of await Promise.all(tasks)) {
      expect('error' in t).toBe(true);
      const e = (t as { error: CairnError }).error;
      expect([e.code, e.message]).toEqual(['INTERNAL', expect.stringMatching(/closed/)]);
    }
    await expect(within(job(pool))).rejects.toMatchObject({ code: 'INTERNAL' });
  });
});

describe('the default number of chunk worker threads', () => {
  it('is one per core, at least 1 and at most 256: a 1024-core machine starts 256', () => {
    expect(MAX_DEFAULT_CHUNK_WORKERS).toBe(256);
    expect(defaultChunkWorkers(1024)).toBe(256);
    expect(defaultChunkWorkers(257)).toBe(256);
    expect(defaultChunkWorkers(256)).toBe(256);
    expect(defaultChunkWorkers(2)).toBe(2);
    expect(defaultChunkWorkers(0)).toBe(1);
  });

  it('is what a processor given no count starts', async () => {
    const pool = new ChunkProcessor(settings);
    try {
      expect((pool as unknown as { workers: Worker[] }).workers).toHaveLength(defaultChunkWorkers(availableParallelism()));
    } finally {
      await pool.close();
    }
  });
});
