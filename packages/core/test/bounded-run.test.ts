import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runBounded, type RunBound } from '../src/util/bounded-run.js';

// runBounded against real processes (sh, sleep): a deadline kills what runs too long, a stall
// watchdog kills what stops making progress but lets a slow child that keeps going finish.

const spawned: number[] = [];
const run = (script: string, bound: RunBound) => runBounded('sh', ['-c', script], { bound, what: 'sh test', driver: 'test', onSpawn: (pid) => spawned.push(pid) });

/** Whether the process `pid` still exists (a reaped child is gone). */
const exists = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

afterEach(() => {
  for (const pid of spawned.splice(0)) if (exists(pid)) process.kill(pid, 'SIGKILL'); // our own children only
});

describe('runBounded', () => {
  it('resolves with the exit status and output of a child that ends within its bound', async () => {
    const r = await run('echo out; echo err >&2; exit 3', { kind: 'deadline', ms: 30_000 });
    expect(r).toEqual({ status: 3, signal: null, stdout: 'out\n', stderr: 'err\n' });
  });

  it('a child that outruns its deadline is killed and the run fails with UNAVAILABLE naming the command', async () => {
    await expect(run('sleep 30', { kind: 'deadline', ms: 300 })).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('sh test did not finish'), details: { exited: true } });
    expect(spawned).toHaveLength(1);
    expect(exists(spawned[0]!)).toBe(false);
  });

  it('a child that ignores SIGTERM is SIGKILLed after the grace', async () => {
    // SIGTERM stays ignored across exec: only SIGKILL ends this sleep.
    await expect(run("trap '' TERM; exec sleep 30", { kind: 'deadline', ms: 300 })).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { exited: true } });
    expect(exists(spawned[0]!)).toBe(false);
  });

  it('a stopped child (SIGSTOP, as on hung storage) trips the stall watchdog and is gone afterwards', async () => {
    const p = runBounded('sleep', ['30'], { bound: { kind: 'stall', ms: 500 }, what: 'sleep', driver: 'test', onSpawn: (pid) => (spawned.push(pid), process.kill(pid, 'SIGSTOP')) });
    await expect(p).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('sleep made no progress for 500 ms'), details: { command: 'sleep', exited: true } });
    expect(exists(spawned[0]!)).toBe(false);
  });

  it('a child that prints progress now and then runs longer than the stall window in all and succeeds', async () => {
    // Twelve steps of 0.25 s: about three stall windows of 1 s in all, never one without output.
    const r = await run('i=0; while [ $i -lt 12 ]; do printf .; sleep 0.25; i=$((i+1)); done', { kind: 'stall', ms: 1_000 });
    expect(r).toMatchObject({ status: 0, stdout: '.'.repeat(12) });
  });

  describe('progress by I/O counters', () => {
    let dir: string | undefined;
    afterEach(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('a child that prints nothing but keeps reading (its /proc/<pid>/io rchar grows) is not killed', async () => {
      dir = await mkdtemp(join(tmpdir(), 'cairn-bounded-run-'));
      const file = join(dir, 'lines');
      await writeFile(file, 'line\n'.repeat(12));
      // The shell's own `read` builtin reads the file: its rchar grows at every line, its output stays empty.
      const r = await run(`while read -r l; do sleep 0.25; done < ${file}; echo done`, { kind: 'stall', ms: 1_000 });
      expect(r).toMatchObject({ status: 0, stdout: 'done\n' });
    });

    it('a child that neither prints nor reads nor writes for the stall window is killed', async () => {
      await expect(run('sleep 30', { kind: 'stall', ms: 500 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      expect(exists(spawned[0]!)).toBe(false);
    });
  });

  describe('cancel by an AbortSignal', () => {
    it('an abort kills the running child and the run fails with CANCELLED naming the command once it is gone', async () => {
      const abort = new AbortController();
      const p = runBounded('sh', ['-c', 'sleep 30'], { bound: { kind: 'stall', ms: 30_000 }, what: 'sh test', driver: 'test', signal: abort.signal, onSpawn: (pid) => spawned.push(pid) });
      setTimeout(() => abort.abort(), 100);
      await expect(p).rejects.toMatchObject({ code: 'CANCELLED', message: expect.stringContaining('sh test cancelled'), details: { command: 'sh test', exited: true } });
      expect(exists(spawned[0]!)).toBe(false);
    });

    it('a stopped child (SIGSTOP) is still gone when the run is cancelled (SIGKILL after the grace)', async () => {
      const abort = new AbortController();
      const p = runBounded('sleep', ['30'], { bound: { kind: 'deadline', ms: 600 }, what: 'sleep', driver: 'test', signal: abort.signal, onSpawn: (pid) => (spawned.push(pid), process.kill(pid, 'SIGSTOP')) });
      abort.abort();
      await expect(p).rejects.toMatchObject({ code: 'CANCELLED', details: { exited: true } });
      expect(exists(spawned[0]!)).toBe(false);
    });

    it('a signal already aborted starts nothing', async () => {
      await expect(runBounded('sleep', ['30'], { bound: { kind: 'deadline', ms: 1_000 }, what: 'sleep', driver: 'test', signal: AbortSignal.abort(), onSpawn: (pid) => spawned.push(pid) })).rejects.toMatchObject({ code: 'CANCELLED' });
      expect(spawned).toEqual([]);
    });

    it('an abort made while the child is being told of (in onSpawn) cancels the run too', async () => {
      const abort = new AbortController();
      const p = runBounded('sleep', ['30'], { bound: { kind: 'deadline', ms: 2_000 }, what: 'sleep', driver: 'test', signal: abort.signal, onSpawn: (pid) => (spawned.push(pid), abort.abort()) });
      await expect(p).rejects.toMatchObject({ code: 'CANCELLED', details: { command: 'sleep', exited: true } });
      expect(exists(spawned[0]!)).toBe(false);
    });

    it('a child that ends before the abort resolves as usual', async () => {
      const abort = new AbortController();
      const r = await runBounded('sh', ['-c', 'echo ok'], { bound: { kind: 'deadline', ms: 30_000 }, what: 'sh test', driver: 'test', signal: abort.signal });
      abort.abort();
      expect(r).toMatchObject({ status: 0, stdout: 'ok\n' });
    });
  });

  it('the child gets the environment given', async () => {
    const r = await runBounded('sh', ['-c', 'echo "$BOUNDED_RUN_TEST"'], { bound: { kind: 'deadline', ms: 30_000 }, what: 'sh test', driver: 'test', env: { ...process.env, BOUNDED_RUN_TEST: 'given' } });
    expect(r.stdout).toBe('given\n');
  });

  it('a program that cannot be started rejects with the spawn error', async () => {
    await expect(runBounded('/nonexistent/qemu-img', [], { bound: { kind: 'deadline', ms: 1_000 }, what: 'x', driver: 'test' })).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
