/**
 * The CPU work of the pipeline, as messages: one module runs it in worker threads and inline.
 * Work travels in batches (a read unit of several chunks, or a coalesced pack range of several
 * blobs) so that per-message costs do not grow with smaller chunks.
 */
import type { CompressionAlgorithm } from '../contracts/backup-service.js';
import { isCairnError } from '../errors.js';
import { ChunkCodec } from './codec.js';

export interface CodecSettings {
  idKey?: Uint8Array;
  dataKey?: Uint8Array;
  compression: CompressionAlgorithm;
  /** Chunk size in bytes: a zero buffer of this size is kept for zero detection. */
  chunkSize: number;
}

/**
 * Hash every chunk of `buf[0, length)` (consecutive chunks of `chunkSize`), and compress and seal
 * those that are neither zero nor equal to the parent's chunk at the same index.
 */
export interface ProcessRequest {
  kind: 'process';
  seq: number;
  buf: ArrayBuffer;
  length: number;
  /** Per chunk: the parent backup's chunk id at that index, or null. */
  parentIds: (string | null)[];
}

export interface ChunkOutcome {
  zero: boolean;
  id: string | null;
  /** Equal to the parent's chunk at the same index (not encoded). */
  same: boolean;
  /** Where the chunk's blob sits in `encoded` (length 0 when not encoded). */
  offset: number;
  length: number;
}

export interface ProcessReply {
  kind: 'process';
  seq: number;
  buf: ArrayBuffer;
  outcomes: ChunkOutcome[];
  /** The encoded blobs, back to back. */
  encoded: ArrayBuffer | null;
}

/** Open, decompress and check the blobs of one fetched pack range. */
export interface DecodeRequest {
  kind: 'decode';
  seq: number;
  blob: ArrayBuffer;
  entries: { offset: number; length: number; id: string; rawLength: number }[];
}

export interface DecodeReply {
  kind: 'decode';
  seq: number;
  /** Plaintexts back to back, in entry order. */
  data: ArrayBuffer | null;
  /** Per entry: where its plaintext is in `data`, or the error that stopped it. */
  results: ({ offset: number; length: number } | { error: { code: string; message: string } })[];
}

export type TaskRequest = ProcessRequest | DecodeRequest;
export type TaskReply = ProcessReply | DecodeReply;

/** An ArrayBuffer holding exactly `b`'s bytes, safe to transfer (copies only when `b` is a view into a larger one). */
export function ownBuffer(b: Uint8Array): ArrayBuffer {
  if (b.byteOffset === 0 && b.buffer.byteLength === b.length && b.buffer instanceof ArrayBuffer) return b.buffer;
  const copy = new ArrayBuffer(b.length);
  new Uint8Array(copy).set(b);
  return copy;
}

/** Concatenates buffers into one new ArrayBuffer (one transfer instead of many). */
function join(parts: Buffer[], total: number): ArrayBuffer | null {
  if (parts.length === 0) return null;
  const out = new ArrayBuffer(total);
  const view = new Uint8Array(out);
  let at = 0;
  for (const p of parts) {
    view.set(p, at);
    at += p.length;
  }
  return out;
}

/** Executes requests against one codec; the same code runs in each worker and inline. */
export class TaskRunner {
  private readonly codec: ChunkCodec;
  private readonly zeros: Buffer;

  constructor(private readonly settings: CodecSettings) {
    this.codec = new ChunkCodec(
      settings.idKey ? Buffer.from(settings.idKey) : undefined,
      settings.dataKey ? Buffer.from(settings.dataKey) : undefined,
    );
    this.zeros = Buffer.alloc(settings.chunkSize);
  }

  run(req: TaskRequest): TaskReply {
    return req.kind === 'process' ? this.process(req) : this.decode(req);
  }

  private process(req: ProcessRequest): ProcessReply {
    const { chunkSize } = this.settings;
    const outcomes: ChunkOutcome[] = [];
    const parts: Buffer[] = [];
    let total = 0;
    for (let i = 0, at = 0; at < req.length; i++, at += chunkSize) {
      const n = Math.min(chunkSize, req.length - at);
      const data = Buffer.from(req.buf, at, n);
      if (data.equals(this.zeros.subarray(0, n))) {
        outcomes.push({ zero: true, id: null, same: false, offset: 0, length: 0 });
        continue;
      }
      const id = this.codec.chunkId(data);
      if (id === req.parentIds[i]) {
        outcomes.push({ zero: false, id, same: true, offset: 0, length: 0 });
        continue;
      }
      const encoded = this.codec.encode(data, this.settings.compression, id);
      outcomes.push({ zero: false, id, same: false, offset: total, length: encoded.length });
      parts.push(encoded);
      total += encoded.length;
    }
    return { kind: 'process', seq: req.seq, buf: req.buf, outcomes, encoded: join(parts, total) };
  }

  private decode(req: DecodeRequest): DecodeReply {
    const total = req.entries.reduce((n, e) => n + e.rawLength, 0);
    const data = new ArrayBuffer(total);
    const results: DecodeReply['results'] = [];
    let at = 0;
    for (const e of req.entries) {
      try {
        this.codec.decodeInto(new Uint8Array(req.blob, e.offset, e.length), e.id, Buffer.from(data, at, e.rawLength));
        results.push({ offset: at, length: e.rawLength });
      } catch (err) {
        results.push({ error: { code: isCairnError(err) ? err.code : 'INTERNAL', message: (err as Error).message } });
      }
      at += e.rawLength;
    }
    return { kind: 'decode', seq: req.seq, data, results };
  }
}
