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

/** Where the worker script lives: next to this module in dist (tests that load src use dist's copy). */
function workerUrl(): URL {
  const url = new URL('./chunk-worker.js', import.meta.url);
  if (existsSync(fileURLToPath(url))) return url;
  const fromDist = new URL(url.href.replace('/src/repository/', '/dist/repository/'));
  if (existsSync(fileURLToPath(fromDist))) return fromDist;
  throw new CairnError('INTERNAL', `chunk worker script not found at ${url.href} (build with tsc -b first)`);
}

/**
 * Runs chunk hashing, compression, sealing and opening on a pool of worker threads (or inline when
 * `workers` is 0), on shared memory the caller owns: messages carry only offsets, ids and
 * outcomes. Memory: the callers' buffers; the queue is bounded by the callers.
 */
export class ChunkProcessor {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: TaskRequest[] = [];
  private readonly pending = new Map<number, { resolve: (r: TaskReply) => void; reject: (e: unknown) => void }>();
  private inline: TaskRunner | undefined;
  /** Settings still being worked out (keys being derived): tasks wait for them. */
  private settingsPending: Promise<void> | undefined;
  private seq = 0;
  private failure: unknown;

  /**
   * `workers`: threads to use. Default: the machine's available parallelism. 0 runs inline.
   * `settings` may be a promise (the repository's keys still being derived): the threads boot at
   * once, on a core the derivation leaves idle, and get the settings when they come; tasks wait
   * for them. If it rejects, every task fails with its error (close the processor).
   */
  constructor(settings: CodecSettings | Promise<CodecSettings>, private readonly workerCount = availableParallelism()) {
    const known = settings instanceof Promise ? undefined : settings;
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
    const url = workerUrl();
    for (let i = 0; i < workerCount; i++) {
      const w = new Worker(url, { workerData: known });
      w.on('message', (reply: TaskReply) => this.onReply(w, reply));
      w.on('error', (err) => this.fail(err));
      w.unref();
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  /** Hands settings that came late to the workers (or the inline runner), ahead of any task. */
  private configure(settings: CodecSettings): void {
    if (this.workerCount <= 0) {
      this.inline = new TaskRunner(settings);
      return;
    }
    const msg: ConfigureRequest = { kind: 'configure', settings };
    for (const w of this.workers) w.postMessage(msg);
  }

  get size(): number {
    return this.workers.length || 1;
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

  async close(): Promise<void> {
    const ws = this.workers.splice(0);
    await Promise.all(ws.map((w) => w.terminate()));
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
    if (this.settingsPending) return this.settingsPending.then(() => this.dispatch(partial));
    if (this.failure) return Promise.reject(this.failure);
    const req = { ...partial, seq: ++this.seq } as TaskRequest;
    if (this.workerCount <= 0) return Promise.resolve(this.inline!.run(req));
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
      const w = this.idle.pop()!;
      w.postMessage(this.queue.shift()!);
    }
  }

  private onReply(w: Worker, reply: TaskReply): void {
    this.idle.push(w);
    const p = this.pending.get(reply.seq);
    this.pending.delete(reply.seq);
    if (this.pending.size === 0) for (const x of this.workers) x.unref();
    p?.resolve(reply);
    this.pump();
  }

  private fail(err: unknown): void {
    this.failure = new CairnError('INTERNAL', `chunk worker failed: ${(err as Error).message}`, { cause: err });
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
  }
}
