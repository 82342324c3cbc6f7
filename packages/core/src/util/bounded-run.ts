import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { CairnError } from '../errors.js';

/**
 * How long a child may run:
 * - `deadline`: at most `ms` in all (metadata work, whose cost does not grow with the data);
 * - `stall`: as long as it takes, but never `ms` without progress (data copies, which take as
 *   long as the data). Progress is any byte the child writes to stdout or stderr (`qemu-img -p`
 *   prints its percentage) or any change of its read/write counters in `/proc/<pid>/io` (rchar,
 *   wchar: every read or write it makes, of any file). The watchdog never touches the files the
 *   child works on: a `stat` on hung storage would hang the watchdog too.
 */
export type RunBound = { kind: 'deadline'; ms: number } | { kind: 'stall'; ms: number };

export interface RunResult {
  /** Exit status (null when killed by a signal nobody here sent). */
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  bound: RunBound;
  /** Named in errors (e.g. `qemu-img check`). */
  what: string;
  driver: string;
  /** Told each child's pid right after it is spawned (supervision, tests). */
  onSpawn?: (pid: number, args: readonly string[]) => void;
  /**
   * Cancels the run: the child is killed as on an overrun (SIGTERM, SIGKILL after the grace) and
   * the run fails with `CANCELLED` naming `what` once the kill sequence is over; already aborted,
   * nothing is started.
   */
  signal?: AbortSignal;
  /** The child's environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /**
   * Given: stdout is handed to it chunk by chunk as it comes, and not kept (`stdout` resolves
   * empty, and the 16 MiB limit is not applied to it), for a report whose size grows with the
   * data (`qemu-img map` of a fragmented image). Should it throw, the child is killed as on an
   * overrun and the run fails with that error (a CairnError; anything else as `INTERNAL`).
   */
  onStdout?: (chunk: Buffer) => void;
}

/** Output kept per stream; a child writing more is killed (`INTERNAL`): none of ours should. */
const MAX_OUTPUT = 16 * 1024 * 1024;
/** SIGTERM → SIGKILL, and SIGKILL → giving up on the exit: the shorter of this and the bound. */
const KILL_GRACE_MS = 3_000;

/**
 * Runs `binary` with `args` (no shell) under `bound`. Resolves with how it ended, whatever its exit
 * status; the caller judges that. Rejects with the spawn error (an `ErrnoException`: ENOENT,
 * EACCES…) when it cannot be started; with `UNAVAILABLE` naming `what` when it overran its bound
 * (hung storage, a stopped process) — it was then sent SIGTERM, and SIGKILL after a grace
 * (`details.exited`: whether its exit was seen within a second grace; a process stuck in the
 * kernel dies only when its I/O returns). The rejection comes only once the kill sequence is over,
 * so a caller that then removes what the child was making does not race a child that got to run
 * on. `CANCELLED` naming `what` when `signal` aborts, after the same kill sequence. `INTERNAL`
 * when it writes more than 16 MiB to a stream that is kept (stdout is not, given `onStdout`).
 */
export function runBounded(binary: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  const { bound, what, driver, signal } = options;
  const grace = Math.min(KILL_GRACE_MS, bound.ms);
  if (signal?.aborted) return Promise.reject(new CairnError('CANCELLED', `${what} cancelled`, { driver, details: { command: what } }));
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(options.env ? { env: options.env } : {}) });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    let lastProgress = Date.now();
    let failure: CairnError | undefined;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const exited = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((res) => child.once('exit', (status, signal) => res({ status, signal })));

    const onAbort = (): void => void kill(new CairnError('CANCELLED', `${what} cancelled`, { driver, details: { command: what, pid: child.pid } }));
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      if (timer) clearInterval(timer);
      signal?.removeEventListener('abort', onAbort);
      fn();
    };
    const kill = async (error: CairnError): Promise<void> => {
      if (failure) return;
      failure = error;
      if (timer) clearInterval(timer);
      const within = (ms: number): Promise<boolean> => Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
      child.kill('SIGTERM');
      let gone = await within(grace);
      if (!gone) {
        child.kill('SIGKILL');
        gone = await within(grace);
      }
      if (error.details) error.details.exited = gone;
      finish(() => reject(error));
    };
    const collect = (chunks: Buffer[], which: 'out' | 'err') => (chunk: Buffer) => {
      lastProgress = Date.now();
      if (which === 'out' && options.onStdout) {
        if (failure) return;
        try {
          options.onStdout(chunk);
        } catch (e) {
          void kill(e instanceof CairnError ? e : new CairnError('INTERNAL', `${what}: ${(e as Error).message}`, { driver, cause: e, details: { pid: child.pid } }));
        }
        return;
      }
      const total = (which === 'out' ? (outBytes += chunk.length) : (errBytes += chunk.length));
      if (total > MAX_OUTPUT) void kill(new CairnError('INTERNAL', `${what} wrote more than ${MAX_OUTPUT} bytes to std${which}`, { driver, details: { pid: child.pid } }));
      else chunks.push(chunk);
    };
    child.stdout.on('data', collect(out, 'out'));
    child.stderr.on('data', collect(err, 'err'));
    child.once('error', (e) => {
      if (child.pid === undefined) finish(() => reject(e)); // not started
    });
    child.once('close', (status, signal) => {
      if (failure) return; // kill() settles
      finish(() => resolve({ status, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
    });
    if (child.pid === undefined) return; // the 'error' event follows
    options.onSpawn?.(child.pid, args);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort(); // aborted meanwhile (by onSpawn): no event will come

    const started = Date.now();
    const pid = child.pid;
    let mark = '';
    let probing = false;
    timer = setInterval(
      () => {
        if (probing || failure) return;
        probing = true;
        void (bound.kind === 'stall' ? ioCounters(pid) : Promise.resolve(''))
          .then((now) => {
            if (now !== mark) {
              if (mark !== '') lastProgress = Date.now();
              mark = now;
            }
            const idle = bound.kind === 'stall' ? Date.now() - lastProgress : Date.now() - started;
            if (idle < bound.ms || failure || settled) return;
            const why = bound.kind === 'stall' ? `made no progress for ${bound.ms} ms` : `did not finish within ${bound.ms} ms`;
            void kill(new CairnError('UNAVAILABLE', `${what} ${why} (storage not answering?); it was killed`, { driver, details: { command: what, pid, bound: bound.kind, ms: bound.ms } }));
          })
          .finally(() => {
            probing = false;
          });
      },
      Math.max(10, Math.min(1_000, bound.ms / 4)),
    );
  });
}

/** `rchar`/`wchar` of `/proc/<pid>/io` (all threads of the process), or '' where it cannot be read. */
async function ioCounters(pid: number): Promise<string> {
  try {
    const text = await readFile(`/proc/${pid}/io`, 'utf8');
    return (text.match(/^(rchar|wchar):\s*\d+$/gm) ?? []).join(',');
  } catch {
    return '';
  }
}
