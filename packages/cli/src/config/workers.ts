import { availableParallelism } from 'node:os';
import { MAX_WORKERS } from './schema.js';

/**
 * The chunk worker threads a target's repository gets: `configured` (`repository.workers`, which
 * the schema holds to 0..MAX_WORKERS) when given, else one per core of `cores` (default: the
 * machine's available parallelism) but never more than MAX_WORKERS, the limit the config itself
 * enforces: a 1024-core machine gets 256 threads by default, not 1024 (each thread reserves its
 * own read-ahead in shared memory).
 */
export function repositoryWorkers(configured: number | undefined, cores: number = availableParallelism()): number {
  return configured ?? Math.max(1, Math.min(cores, MAX_WORKERS));
}
