import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { CairnError } from '../errors.js';
import { alignedBuffer } from '../util/direct-io.js';
import { TaskRunner, regionOf, type CodecSettings, type ConfigureRequest, type DecodeReply, type ProcessReply, type TaskReply, type TaskRequest } from './chunk-tasks.js';

export interface ProcessedChunk {
  zero: boolean;
  id: string | null;
  same: boolean;
  /** The sealed blob (a view into the caller's output buffer), when encoded. */
  encoded: Buffer | null;
}

export interface DecodedChunk {
  id: string;
  data?: Buffer;
  error?: CairnError;
}

type Distribute<T> = T extends TaskRequest ? Omit<T, 'seq'> : never;

/**
 * Where the worker script lives: next to this module in dist (tests that load src use dist's copy),
 * or next to the bundle that holds this module (scripts/bundle.mjs puts it there).
 */
function workerUrl(): URL {
  const url = new URL('./chunk-worker.js', import.meta.url);
  if (existsSync(fileURLToPath(url))) return url;
  const fromDist = new URL(url.href.replace('/src/repository/', '/dist/repository/'));
  if (existsSync(fileURLToPath(fromDist))) return fromDist;
  throw new CairnError('INTERNAL', `chunk worker script not found at ${url.href} (build with npm run build first)`);
}

/** One worker thread and the task it runs (0: none). A worker runs one task at a time. */
interface Slot {
  readonly worker: Worker;
  task: number;
  /** Replied to a task at least once (it started fine). */
  served: boolean;
  /** Why it died, from its 'error' event; its 'exit' follows. */
  cause: unknown;
}

/**
 * Consecutive workers that died before finishing any task (a module that fails to load, a crash
 * at start) after which the pool stops replacing them and fails the tasks pending: no respawn
 * loop. The next task given when none is pending (the next job) tries again.
 */
const MAX_START_FAILURES = 3;

/**
 * The most chunk worker threads a processor starts by default (the CLI's config limit too):
 * each thread reserves its own read-ahead in shared memory.
 */
export const MAX_DEFAULT_CHUNK_WORKERS = 256;

/**
 * A processor's default thread count: one per core of `cores` (default: the machine's available
 * parallelism), at least 1 and at most MAX_DEFAULT_CHUNK_WORKERS, so a 1024-core machine starts
 * 256 threads, not 1024.
 */
export function defaultChunkWorkers(cores: number = availableParallelism()): number {
  return Math.max(1, Math.min(cores, MAX_DEFAULT_CHUNK_WORKERS));
}

/**
 * Runs chunk hashing, compression, sealing and opening on a pool of worker threads (or inline when
 * `workers` is 0), on shared memory the caller owns: messages carry only offsets, ids and
 * outcomes. Memory: the callers' buffers; the queue is bounded by the callers.
 *
 * A worker that dies (an uncaught error, process.exit(), terminate(), an OOM kill of the thread;
 * any exit outside close()) fails only the task it was running, with an INTERNAL CairnError naming
 * the error or the exit code. That task is failed on the worker's 'exit', never on its 'error':
 * 'exit' comes once the thread is gone, so it can no longer write into the task's memory when the
 * caller takes it back (an 'error' also terminates the worker, to be sure it ends). Tasks on the
 * other workers run on and settle normally, and the dead worker is replaced at once, so later jobs
 * work. A worker that dies before finishing any task counts as a failure to start; after
 * MAX_START_FAILURES in a row (none in between finishing its first task) the pool gives up: no more
 * replacements, and queued tasks, and tasks given while others are still pending, fail with
 * INTERNAL. The first task given once none is pending (the next job) starts a fresh pool of
 * workers, with MAX_START_FAILURES tries again: a long-running process (`cairn serve`) recovers
 * once workers can start (threads or memory short for a while), and a pool that can never start
 * costs each job at most MAX_START_FAILURES worker starts, never a loop. close()
 * terminates every worker and rejects every pending task (queued ones at once, running ones when
 * their worker is gone), so nothing hangs. None of this adds a message per task: the pool only
 * notes which task each worker holds.
 */
export class ChunkProcessor {
  /** The live workers (a dead one leaves at its 'exit'). */
  private readonly workers: Worker[] = [];
  private readonly idle: Slot[] = [];
  private readonly queue: TaskRequest[] = [];
  private readonly pending = new Map<number, { resolve: (r: TaskReply) => void; reject: (e: unknown) => void }>();
  private inline: TaskRunner | undefined;
  /** Settings still being worked out (keys being derived): tasks wait for them. */
  private settingsPending: Promise<void> | undefined;
  /** The settings once known: a replacement worker starts with them. */
  private settings: CodecSettings | undefined;
  private seq = 0;
  /** Fails every task from now on: the settings failed, or (`gaveUp`) workers kept dying at start. */
  private failure: unknown;
  /** `failure` is a give-up, which the next job retries (see MAX_START_FAILURES). */
  private gaveUp = false;
  private startFailures = 0;
  private closed: Promise<void> | undefined;
  /** Resolves on close(): tasks waiting for the settings stop waiting. */
  private readonly closing: Promise<void>;
  private markClosing!: () => void;
  private url: URL | undefined;

  /**
   * `workers`: threads to use. Default: defaultChunkWorkers() (the machine's available
   * parallelism, at most MAX_DEFAULT_CHUNK_WORKERS). 0 runs inline.
   * `settings` may be a promise (the repository's keys still being derived): the threads boot at
   * once, on a core the derivation leaves idle, and get the settings when they come; tasks wait
   * for them. If it rejects, every task fails with its error (close the processor).
   */
  constructor(settings: CodecSettings | Promise<CodecSettings>, private readonly workerCount = defaultChunkWorkers()) {
    this.closing = new Promise((resolve) => (this.markClosing = resolve));
    const known = settings instanceof Promise ? undefined : settings;
    this.settings = known;
    if (settings instanceof Promise) {
      this.settingsPending = settings.then(
        (s) => {
          this.settingsPending = undefined;
          this.configure(s);
        },
        (err: unknown) => {
          this.failure = err;
          this.settingsPending = undefined;
        },
      );
    }
    if (workerCount <= 0) {
      if (known) this.inline = new TaskRunner(known);
      return;
    }
    this.url = workerUrl();
    for (let i = 0; i < workerCount; i++) this.spawn();
  }

  /** Starts a worker, idle; ref'd only while tasks are pending. */
  private spawn(): void {
    const w = new Worker(this.url!, { workerData: this.settings });
    const slot: Slot = { worker: w, task: 0, served: false, cause: undefined };
    w.on('message', (reply: TaskReply) => this.onReply(slot, reply));
    w.on('error', (err) => this.onError(slot, err));
    w.on('exit', (code) => this.onExit(slot, code));
    if (this.pending.size === 0) w.unref();
    this.workers.push(w);
    this.idle.push(slot);
  }

  /** Hands settings that came late to the workers (or the inline runner), ahead of any task. */
  private configure(settings: CodecSettings): void {
    this.settings = settings;
    if (this.workerCount <= 0) {
      this.inline = new TaskRunner(settings);
      return;
    }
    const msg: ConfigureRequest = { kind: 'configure', settings };
    for (const w of this.workers) w.postMessage(msg);
  }

  get size(): number {
    return this.closed ? 1 : Math.max(1, this.workerCount);
  }

  /**
   * Memory for process() and decode(): shared with the workers (read and written in place) and
   * page-aligned (so decoded data can go to an O_DIRECT write). Allocate once, reuse; code that
   * needs such memory per operation takes it from util/buffer-pool instead.
   */
  static buffer(size: number): Buffer {
    return alignedBuffer(size, { shared: true });
  }

  /**
   * Processes the consecutive chunks in `input`, writing encoded blobs into `output` (room:
   * outputBytesPerChunk(chunkSize) per chunk). Both are shared memory (ChunkProcessor.buffer or
   * util/buffer-pool) and belong to the caller, who must not touch them until this resolves; the
   * results' `encoded` are views into `output`.
   */
  async process(input: Buffer, output: Buffer, parentIds: (string | null)[]): Promise<ProcessedChunk[]> {
    const reply = (await this.submit({ kind: 'process', input: this.shared(input), output: this.shared(output), parentIds })) as ProcessReply;
    return reply.outcomes.map((o) => ({
      zero: o.zero,
      id: o.id,
      same: o.same,
      encoded: o.length > 0 ? output.subarray(o.offset, o.offset + o.length) : null,
    }));
  }

  /**
   * Opens the blobs at `entries` of a fetched range `input`, each checked against its id, writing
   * plaintexts back to back into `output` (room: the entries' rawLength). Same ownership rules
   * as process(). Per entry: a view of its plaintext in `output`, or the `CORRUPT` error that
   * stopped it.
   */
  async decode(input: Buffer, output: Buffer, entries: { offset: number; length: number; id: string; rawLength: number }[]): Promise<DecodedChunk[]> {
    const reply = (await this.submit({ kind: 'decode', input: this.shared(input), output: this.shared(output), entries })) as DecodeReply;
    return reply.results.map((r, i) =>
      'error' in r
        ? { id: entries[i]!.id, error: new CairnError(r.error.code as CairnError['code'], r.error.message, { details: { chunk: entries[i]!.id } }) }
        : { id: entries[i]!.id, data: output.subarray(r.offset, r.offset + r.length) },
    );
  }

  /**
   * Terminates the workers. Every pending task is rejected (INTERNAL): a queued one at once, a
   * running one once its worker is gone, before this resolves. Later tasks fail too.
   */
  close(): Promise<void> {
    this.closed ??= (async () => {
      this.markClosing();
      const err = new CairnError('INTERNAL', 'chunk processor closed');
      for (const req of this.queue.splice(0)) this.settle(req.seq, err);
      await Promise.all(this.workers.map((w) => w.terminate()));
    })();
    return this.closed;
  }

  /** The region of `b`, which workers can only reach in shared memory. */
  private shared(b: Buffer): ReturnType<typeof regionOf> {
    if (this.workerCount > 0 && !(b.buffer instanceof SharedArrayBuffer)) throw new CairnError('INTERNAL', 'chunk processor buffers must be shared memory (ChunkProcessor.buffer or util/buffer-pool)');
    return regionOf(b);
  }

  private async submit(partial: Distribute<TaskRequest>): Promise<ProcessReply | DecodeReply> {
    const reply = await this.dispatch(partial);
    if (reply.kind === 'failed') throw new CairnError(reply.error.code as CairnError['code'], reply.error.message);
    return reply;
  }

  private dispatch(partial: Distribute<TaskRequest>): Promise<TaskReply> {
    if (this.settingsPending && !this.closed) return Promise.race([this.settingsPending, this.closing]).then(() => this.dispatch(partial));
    if (this.failure && this.gaveUp && this.pending.size === 0 && !this.closed) this.restart();
    if (this.failure) return Promise.reject(this.failure);
    const req = { ...partial, seq: ++this.seq } as TaskRequest;
    if (this.inline) return Promise.resolve(this.inline.run(req));
    if (this.closed) return Promise.reject(new CairnError('INTERNAL', 'chunk processor closed'));
    return new Promise((resolve, reject) => {
      // Workers are unref'd while idle (an idle pool never keeps the process alive) and ref'd
      // while work is pending (a pending task must, or the process exits mid-backup).
      if (this.pending.size === 0) for (const w of this.workers) w.ref();
      this.pending.set(req.seq, { resolve, reject });
      this.queue.push(req);
      this.pump();
    });
  }

  private pump(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const slot = this.idle.pop()!;
      const req = this.queue.shift()!;
      slot.task = req.seq;
      slot.worker.postMessage(req);
    }
  }

  private onReply(slot: Slot, reply: TaskReply): void {
    slot.task = 0;
    if (!slot.served) {
      slot.served = true;
      this.startFailures = 0;
    }
    // A reply drained from a worker already failing: it takes no more tasks.
    if (slot.cause === undefined) this.idle.push(slot);
    const p = this.pending.get(reply.seq);
    this.pending.delete(reply.seq);
    if (this.pending.size === 0) for (const x of this.workers) x.unref();
    p?.resolve(reply);
    this.pump();
  }

  /** Rejects one pending task. */
  private settle(seq: number, err: unknown): void {
    const p = this.pending.get(seq);
    if (!p) return;
    this.pending.delete(seq);
    if (this.pending.size === 0) for (const x of this.workers) x.unref();
    p.reject(err);
  }

  /**
   * An uncaught error in a worker: it is ending (terminate() makes sure). Its task fails at its
   * 'exit', once it can no longer write into the task's memory.
   */
  private onError(slot: Slot, err: unknown): void {
    slot.cause ??= err ?? new Error('unknown error');
    const at = this.idle.indexOf(slot);
    if (at >= 0) this.idle.splice(at, 1);
    void slot.worker.terminate();
  }

  /** A worker is gone (the thread has ended): fail its task only, and replace it. */
  private onExit(slot: Slot, code: number): void {
    const at = this.workers.indexOf(slot.worker);
    if (at >= 0) this.workers.splice(at, 1);
    const idleAt = this.idle.indexOf(slot);
    if (idleAt >= 0) this.idle.splice(idleAt, 1);
    const task = slot.task;
    slot.task = 0;
    if (this.closed) {
      if (task) this.settle(task, new CairnError('INTERNAL', 'chunk processor closed while the task ran'));
      return;
    }
    const why = slot.cause !== undefined ? `failed: ${(slot.cause as Error)?.message ?? String(slot.cause)}` : `exited with code ${code}`;
    if (task) this.settle(task, new CairnError('INTERNAL', `chunk worker ${why}`, { cause: slot.cause }));
    if (!slot.served && ++this.startFailures >= MAX_START_FAILURES) {
      this.giveUp(why);
      return;
    }
    if (this.failure === undefined && this.workers.length < this.workerCount) this.spawn();
    this.pump();
  }

  /** Workers keep dying before finishing a task: stop replacing them; fail what waits, and what comes until the next job. */
  private giveUp(why: string): void {
    if (this.failure === undefined) {
      this.failure = new CairnError('INTERNAL', `chunk workers keep dying before finishing a task (${MAX_START_FAILURES} in a row, the last ${why}): gave up on the pool until the next job`);
      this.gaveUp = true;
    }
    for (const req of this.queue.splice(0)) this.settle(req.seq, this.failure);
  }

  /** After a give-up, with no task pending: a fresh try at starting the workers. */
  private restart(): void {
    this.failure = undefined;
    this.gaveUp = false;
    this.startFailures = 0;
    while (this.workers.length < this.workerCount) this.spawn();
  }
}
