/**
 * The CPU work of the pipeline, as messages: one module runs it in worker threads and inline.
 * Work travels in batches (a read unit of several chunks, or a coalesced pack range of several
 * blobs) so that per-message costs do not grow with smaller chunks. The bytes stay where they are:
 * requests name regions of shared memory the caller owns, and workers read and write them in
 * place, so no batch is copied, transferred or allocated per message.
 */
import type { CompressionAlgorithm } from '../contracts/backup-service.js';
import { isCairnError } from '../errors.js';
import { COPY_ALIGN, alignPad } from '../util/direct-io.js';
import { isZero } from '../util/zero-bytes.js';
import { ChunkCodec } from './codec.js';

export interface CodecSettings {
  idKey?: Uint8Array;
  dataKey?: Uint8Array;
  compression: CompressionAlgorithm;
  /** Chunk size in bytes: a process request's input is cut into chunks of this size (the last may be shorter). */
  chunkSize: number;
}

/**
 * A region of memory both sides can see: a SharedArrayBuffer when the work crosses to a worker
 * thread (nothing is transferred or copied), any ArrayBuffer inline.
 */
export interface Region {
  buffer: ArrayBufferLike;
  offset: number;
  length: number;
}

/**
 * Hash every chunk of `input` (consecutive chunks of `chunkSize`), and compress and seal those
 * that are neither zero nor equal to the parent's chunk at the same index into `output`, in
 * order, each padded to align its payload (room: outputBytesPerChunk(chunkSize) per chunk).
 */
export interface ProcessRequest {
  kind: 'process';
  seq: number;
  input: Region;
  output: Region;
  /** Per chunk: the parent backup's chunk id at that index, or null. */
  parentIds: (string | null)[];
}

export interface ChunkOutcome {
  zero: boolean;
  id: string | null;
  /** Equal to the parent's chunk at the same index (not encoded). */
  same: boolean;
  /** Where the chunk's blob sits in the output region (length 0 when not encoded). */
  offset: number;
  length: number;
}

export interface ProcessReply {
  kind: 'process';
  seq: number;
  outcomes: ChunkOutcome[];
}

/**
 * Open, decompress and check the blobs of one fetched pack range (`input`; entry offsets are
 * relative to it), writing the plaintexts back to back into `output` in entry order.
 */
export interface DecodeRequest {
  kind: 'decode';
  seq: number;
  input: Region;
  output: Region;
  entries: { offset: number; length: number; id: string; rawLength: number }[];
}

export interface DecodeReply {
  kind: 'decode';
  seq: number;
  /** Per entry: where its plaintext is in the output region, or the error that stopped it. */
  results: ({ offset: number; length: number } | { error: { code: string; message: string } })[];
}

/** A request that threw (a caller's mistake, such as too small an output region). */
export interface FailedReply {
  kind: 'failed';
  seq: number;
  error: { code: string; message: string };
}

export type TaskRequest = ProcessRequest | DecodeRequest;

/** Sent once to a worker started without settings, before any task (see ChunkProcessor). */
export interface ConfigureRequest {
  kind: 'configure';
  settings: CodecSettings;
}
export type TaskReply = ProcessReply | DecodeReply | FailedReply;

/** A Buffer over a region. */
export const view = (r: Region): Buffer => Buffer.from(r.buffer, r.offset, r.length);

/** Room an output region needs per chunk: encodeInto's working room plus the blob's alignment padding. */
export const outputBytesPerChunk = (chunkSize: number): number => ChunkCodec.encodeRoom(chunkSize) + COPY_ALIGN - 1;

/** The region a Buffer covers. */
export const regionOf = (b: Buffer): Region => ({ buffer: b.buffer, offset: b.byteOffset, length: b.length });

/** Executes requests against one codec; the same code runs in each worker and inline. */
export class TaskRunner {
  private readonly codec: ChunkCodec;

  constructor(private readonly settings: CodecSettings) {
    this.codec = new ChunkCodec(
      settings.idKey ? Buffer.from(settings.idKey) : undefined,
      settings.dataKey ? Buffer.from(settings.dataKey) : undefined,
    );
  }

  /** Runs one request; never throws (a failure becomes a FailedReply, so a worker survives it). */
  run(req: TaskRequest): TaskReply {
    try {
      return req.kind === 'process' ? this.process(req) : this.decode(req);
    } catch (err) {
      return { kind: 'failed', seq: req.seq, error: { code: isCairnError(err) ? err.code : 'INTERNAL', message: (err as Error).message } };
    }
  }

  private process(req: ProcessRequest): ProcessReply {
    const { chunkSize } = this.settings;
    const input = view(req.input);
    const output = view(req.output);
    const outcomes: ChunkOutcome[] = [];
    let total = 0;
    for (let i = 0, at = 0; at < input.length; i++, at += chunkSize) {
      const n = Math.min(chunkSize, input.length - at);
      const data = input.subarray(at, at + n);
      if (isZero(data)) {
        outcomes.push({ zero: true, id: null, same: false, offset: 0, length: 0 });
        continue;
      }
      const id = this.codec.chunkId(data);
      if (id === req.parentIds[i]) {
        outcomes.push({ zero: false, id, same: true, offset: 0, length: 0 });
        continue;
      }
      // Each blob's payload starts on a COPY_ALIGN boundary (see util/direct-io).
      const start = total + alignPad(output.byteOffset + total + this.codec.payloadOffset, 0);
      if (output.length - start < ChunkCodec.encodeRoom(n)) throw new Error(`output region of ${output.length} bytes is too small`);
      const length = this.codec.encodeInto(data, this.settings.compression, id, output.subarray(start));
      outcomes.push({ zero: false, id, same: false, offset: start, length });
      total = start + length;
    }
    return { kind: 'process', seq: req.seq, outcomes };
  }

  private decode(req: DecodeRequest): DecodeReply {
    const input = view(req.input);
    const output = view(req.output);
    const results: DecodeReply['results'] = [];
    let at = 0;
    for (const e of req.entries) {
      try {
        if (at + e.rawLength > output.length) throw new Error(`output region of ${output.length} bytes is too small`);
        this.codec.decodeInto(input.subarray(e.offset, e.offset + e.length), e.id, output.subarray(at, at + e.rawLength));
        results.push({ offset: at, length: e.rawLength });
      } catch (err) {
        results.push({ error: { code: isCairnError(err) ? err.code : 'INTERNAL', message: (err as Error).message } });
      }
      at += e.rawLength;
    }
    return { kind: 'decode', seq: req.seq, results };
  }
}
