import { defaultChunkWorkers } from '@cairn/core';

/**
 * The chunk worker threads a target's repository gets: `configured` (`repository.workers`, which
 * the schema holds to 0..MAX_WORKERS) when given, else core's default for `cores`
 * (defaultChunkWorkers: one per core, at least 1, at most 256, which is also the config's
 * MAX_WORKERS), so a 1024-core machine gets 256 threads by default, not 1024.
 */
export function repositoryWorkers(configured: number | undefined, cores?: number): number {
  return configured ?? defaultChunkWorkers(cores);
}
