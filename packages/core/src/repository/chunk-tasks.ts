/**
 * The CPU work of the pipeline, as messages: one module runs it in worker threads and inline.
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

/** Hash (and, unless zero or same as the parent's chunk, compress and seal) one chunk. */
export interface ProcessRequest {
  kind: 'process';
  seq: number;
  buf: ArrayBuffer;
  length: number;
  /** The parent backup's chunk id at the same index; equal content is not encoded again. */
  parentId: string | null;
}

export interface ProcessReply {
  kind: 'process';
  seq: number;
  buf: ArrayBuffer;
  zero: boolean;
  id: string | null;
  /** True when the chunk equals the parent's at the same index (not encoded). */
  same: boolean;
  encoded: ArrayBuffer | null;
}

/** Open, decompress and check one blob. */
export interface DecodeRequest {
  kind: 'decode';
  seq: number;
  blob: ArrayBuffer;
  blobOffset: number;
  blobLength: number;
  id: string;
  rawLength: number;
}

export interface DecodeReply {
  kind: 'decode';
  seq: number;
  data: ArrayBuffer | null;
  blob: ArrayBuffer;
  error: { code: string; message: string } | null;
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
    const data = Buffer.from(req.buf, 0, req.length);
    if (data.equals(this.zeros.subarray(0, req.length))) {
      return { kind: 'process', seq: req.seq, buf: req.buf, zero: true, id: null, same: false, encoded: null };
    }
    const id = this.codec.chunkId(data);
    if (id === req.parentId) return { kind: 'process', seq: req.seq, buf: req.buf, zero: false, id, same: true, encoded: null };
    const encoded = this.codec.encode(data, this.settings.compression, id);
    return { kind: 'process', seq: req.seq, buf: req.buf, zero: false, id, same: false, encoded: ownBuffer(encoded) };
  }

  private decode(req: DecodeRequest): DecodeReply {
    try {
      const blob = new Uint8Array(req.blob, req.blobOffset, req.blobLength);
      const data = this.codec.decode(blob, req.id, req.rawLength);
      return { kind: 'decode', seq: req.seq, data: ownBuffer(data), blob: req.blob, error: null };
    } catch (err) {
      const code = isCairnError(err) ? err.code : 'INTERNAL';
      return { kind: 'decode', seq: req.seq, data: null, blob: req.blob, error: { code, message: (err as Error).message } };
    }
  }
}
