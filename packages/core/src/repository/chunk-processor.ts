import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { CairnError } from '../errors.js';
import { TaskRunner, ownBuffer, type CodecSettings, type DecodeReply, type ProcessReply, type TaskReply, type TaskRequest } from './chunk-tasks.js';

export interface ProcessedChunk {
  zero: boolean;
  id: string | null;
  same: boolean;
  /** The sealed blob (a view into the batch's shared buffer), when encoded. */
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
 * `workers` is 0). Buffers are transferred, not copied. Memory: one task per worker in flight
 * plus the queue the caller bounds.
 */
export class ChunkProcessor {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: { req: TaskRequest; transfer: ArrayBuffer[] }[] = [];
  private readonly pending = new Map<number, { resolve: (r: TaskReply) => void; reject: (e: unknown) => void }>();
  private readonly inline: TaskRunner | undefined;
  private seq = 0;
  private failure: unknown;

  /** `workers`: threads to use. Default: the machine's available parallelism. 0 runs inline. */
  constructor(settings: CodecSettings, workers = availableParallelism()) {
    if (workers <= 0) {
      this.inline = new TaskRunner(settings);
      return;
    }
    const url = workerUrl();
    for (let i = 0; i < workers; i++) {
      const w = new Worker(url, { workerData: settings });
      w.on('message', (reply: TaskReply) => this.onReply(w, reply));
      w.on('error', (err) => this.fail(err));
      w.unref();
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  get size(): number {
    return this.workers.length || 1;
  }

  /**
   * Processes the consecutive chunks in `buf[0, length)`. Takes `buf` for the duration and gives
   * it back in `buf` of the result (it is transferred to a worker and back).
   */
  async process(buf: Buffer, length: number, parentIds: (string | null)[]): Promise<{ buf: Buffer; chunks: ProcessedChunk[] }> {
    const ab = ownBuffer(buf);
    const reply = (await this.submit({ kind: 'process', buf: ab, length, parentIds }, [ab])) as ProcessReply;
    const encoded = reply.encoded ? Buffer.from(reply.encoded) : null;
    return {
      buf: Buffer.from(reply.buf),
      chunks: reply.outcomes.map((o) => ({
        zero: o.zero,
        id: o.id,
        same: o.same,
        encoded: o.length > 0 && encoded ? encoded.subarray(o.offset, o.offset + o.length) : null,
      })),
    };
  }

  /**
   * Opens the blobs at `entries` of a fetched range, each checked against its id. Per entry:
   * the plaintext, or the `CORRUPT` error that stopped it. Takes ownership of `range`.
   */
  async decode(range: Buffer, entries: { offset: number; length: number; id: string; rawLength: number }[]): Promise<DecodedChunk[]> {
    const ab = ownBuffer(range);
    const reply = (await this.submit({ kind: 'decode', blob: ab, entries }, [ab])) as DecodeReply;
    const data = reply.data ? Buffer.from(reply.data) : Buffer.alloc(0);
    return reply.results.map((r, i) =>
      'error' in r
        ? { id: entries[i]!.id, error: new CairnError(r.error.code as CairnError['code'], r.error.message, { details: { chunk: entries[i]!.id } }) }
        : { id: entries[i]!.id, data: data.subarray(r.offset, r.offset + r.length) },
    );
  }

  async close(): Promise<void> {
    const ws = this.workers.splice(0);
    await Promise.all(ws.map((w) => w.terminate()));
  }

  private submit(partial: Distribute<TaskRequest>, transfer: ArrayBuffer[]): Promise<TaskReply> {
    if (this.failure) return Promise.reject(this.failure);
    const req = { ...partial, seq: ++this.seq } as TaskRequest;
    if (this.inline) {
      try {
        return Promise.resolve(this.inline.run(req));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise((resolve, reject) => {
      // Workers are unref'd while idle (an idle pool never keeps the process alive) and ref'd
      // while work is pending (a pending task must, or the process exits mid-backup).
      if (this.pending.size === 0) for (const w of this.workers) w.ref();
      this.pending.set(req.seq, { resolve, reject });
      this.queue.push({ req, transfer });
      this.pump();
    });
  }

  private pump(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const w = this.idle.pop()!;
      const { req, transfer } = this.queue.shift()!;
      w.postMessage(req, transfer);
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
