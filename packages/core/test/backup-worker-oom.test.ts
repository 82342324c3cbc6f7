/**
 * A backup whose chunk worker threads run out of memory for real (a V8 heap limit, the
 * `resourceLimits` Node gives a worker): the backup fails INTERNAL naming the cause, without a
 * manifest and without hanging, and once memory allows the same process (`cairn serve` runs many
 * backups) backs up again. The pool starts its workers without limits; this file's
 * node:worker_threads is the real one, its Worker started with the limit set below, if any.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';

/** Set: the heap limits of workers started from now on. */
const limits: { now?: { maxOldGenerationSizeMb: number; maxYoungGenerationSizeMb: number } } = vi.hoisted(() => ({}));
vi.mock('node:worker_threads', async (real) => {
  const m = await real<typeof import('node:worker_threads')>();
  class LimitedWorker extends m.Worker {
    constructor(url: string | URL, options: import('node:worker_threads').WorkerOptions = {}) {
      super(url, limits.now ? { ...options, resourceLimits: limits.now } : options);
    }
  }
  return { ...m, Worker: LimitedWorker };
});

import type { Worker } from 'node:worker_threads';
import { CairnError, ChunkedBackupService, MemoryObjectStore } from '../src/index.js';
import type { ChunkProcessor } from '../src/repository/chunk-processor.js';
import { CHUNK, backUp, pattern, restored } from './buffer-backups.js';
import { FAST_KDF, MiB, keys } from './helpers.js';
import { within } from './settle.js';

const workersOf = (p: ChunkProcessor): Worker[] => (p as unknown as { workers: Worker[] }).workers;

afterEach(() => {
  limits.now = undefined;
});

describe('a backup whose chunk workers run out of memory', () => {
  it('fails INTERNAL (out of memory) with no manifest and no task pending; the next backup of the process works once memory allows', async () => {
    const store = new MemoryObjectStore('mem');
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 2, init: { chunkSize: CHUNK, packSize: MiB, kdf: FAST_KDF } });
    try {
      const pool = service.repository.processor();
      const warm = pattern(2 * MiB, 1);
      await backUp(service, 'b0', warm);
      // From now on every worker started has a heap too small for a batch: the ones replacing
      // these, and the replacements of those.
      limits.now = { maxOldGenerationSizeMb: 4, maxYoungGenerationSizeMb: 1 };
      await Promise.all(workersOf(pool).map((w) => w.terminate()));
      const err = await within(backUp(service, 'b1', pattern(16 * MiB, 2)), 20_000).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CairnError);
      expect((err as CairnError).code).toBe('INTERNAL');
      expect((err as CairnError).message).toMatch(/memory limit/);
      expect((pool as unknown as { pending: Map<number, unknown> }).pending.size).toBe(0);
      expect(await keys(store, 'manifests/')).toEqual(['manifests/b0']);
      // Memory is there again: the same pool starts workers that work.
      limits.now = undefined;
      const next = pattern(16 * MiB, 3);
      const b2 = await within(backUp(service, 'b2', next), 20_000);
      expect((await restored(service, b2)).equals(next)).toBe(true);
      expect(workersOf(pool)).toHaveLength(2);
      expect((await service.verify()).problems).toEqual([]);
    } finally {
      await service.close();
    }
  });
});
