/**
 * A process out of file descriptors (EMFILE; ENFILE for the whole host) is short of a resource
 * that frees up as its other work ends: the store's calls fail with a retryable code, leave no
 * temporary file, and succeed once descriptors are free again. The limit is set with the shell's
 * `ulimit -n` in a child process running the compiled store.
 */
import { execFileSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { allFiles, assertDistFresh, CHILD_SCRIPT, tempStore } from './helpers.js';

describe('a process with no file descriptor left', () => {
  beforeAll(() => assertDistFresh());

  it('put, get, list and delete fail with UNAVAILABLE (not INTERNAL) and leave no temporary file; once descriptors are free the same calls succeed', async () => {
    const store = await tempStore('fd-limit');
    try {
      const args = JSON.stringify({ directory: store.directory, mode: 'fdLimit', key: 'data/seed' });
      const out = execFileSync('sh', ['-c', 'ulimit -n 200 && exec "$0" "$1" "$2"', process.execPath, CHILD_SCRIPT, args], { encoding: 'utf8' });
      const results = out.trim().split('\n').map((l) => JSON.parse(l) as { event: string; phase?: string; op?: string; ok?: boolean; code?: string });
      const of = (phase: string) => results.filter((r) => r.phase === phase).map(({ op, ok, code }) => ({ op, ok, code }));
      expect(of('exhausted')).toEqual(['put', 'get', 'list', 'delete'].map((op) => ({ op, ok: false, code: 'UNAVAILABLE' })));
      expect(of('released')).toEqual(['put', 'get', 'list', 'delete'].map((op) => ({ op, ok: true })));
      expect((await allFiles(store.directory)).filter((f) => f.includes('~'))).toEqual([]);
    } finally {
      await rm(store.directory, { recursive: true, force: true });
    }
  });
});
