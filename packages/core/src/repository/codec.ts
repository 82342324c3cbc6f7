/**
 * Chunk ids and the blob envelope, as pure functions shared by the worker threads and the
 * inline path. Envelope: type byte + payload, AES-256-GCM sealed (nonce | ciphertext | tag, the
 * chunk id as associated data) when the repository is encrypted.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { CompressionAlgorithm } from '../contracts/backup-service.js';
import { CairnError } from '../errors.js';
import { BlobType } from './format.js';

const require = createRequire(import.meta.url);

interface ZstdBinding {
  CCtx: new () => { compress(dst: Uint8Array, src: Uint8Array, level: number): number };
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
}
interface Lz4 {
  compressSync(data: Buffer): Buffer;
  uncompressSync(data: Uint8Array): Buffer;
}

interface ZstdSimple {
  compress(data: Uint8Array, params?: { compressionLevel?: number }): Buffer;
  decompress(data: Uint8Array): Buffer;
}

let zstd: ZstdBinding | undefined;
let simple: ZstdSimple | undefined;
const zstdSimple = (): ZstdSimple => (simple ??= require('zstd-napi') as ZstdSimple);
let lz4: Lz4 | undefined;
const zstdBinding = (): ZstdBinding => (zstd ??= require('zstd-napi/binding') as ZstdBinding);
const lz4Binding = (): Lz4 => (lz4 ??= require('lz4-napi') as Lz4);

/** Per-thread codec state: compression contexts and scratch buffers are reused, not reallocated. */
export class ChunkCodec {
  private cctx?: InstanceType<ZstdBinding['CCtx']>;
  private dctx?: InstanceType<ZstdBinding['DCtx']>;
  private scratch = Buffer.alloc(0);

  constructor(
    private readonly idKey: Buffer | undefined,
    private readonly dataKey: Buffer | undefined,
    /** zstd level. Default 1 (measured: level 1 is ~30% faster than 3 for ~10% more bytes). */
    private readonly zstdLevel = 1,
  ) {}

  /** SHA-256 of the plaintext, or HMAC-SHA-256 under the repository's id key. */
  chunkId(data: Uint8Array): string {
    return (this.idKey ? createHmac('sha256', this.idKey) : createHash('sha256')).update(data).digest('hex');
  }

  /**
   * Compresses (keeping the plaintext when compression saves < 3%) and seals a chunk.
   * Returns a new Buffer owned by the caller.
   */
  encode(data: Uint8Array, algorithm: CompressionAlgorithm, id: string): Buffer {
    let type: number = BlobType.none;
    let payload: Uint8Array = data;
    const limit = Math.floor(data.length * 0.97);
    if (algorithm === 'zstd') {
      if (this.scratch.length < data.length + 1) this.scratch = Buffer.allocUnsafe(data.length + 1);
      try {
        this.cctx ??= new (zstdBinding().CCtx)();
        const n = this.cctx.compress(this.scratch.subarray(1, 1 + limit), data, this.zstdLevel);
        if (n < limit) {
          type = BlobType.zstd;
          payload = this.scratch.subarray(1, 1 + n);
        }
      } catch {
        // dst too small: compression does not help, keep the plaintext.
      }
    } else if (algorithm === 'lz4') {
      const c = lz4Binding().compressSync(Buffer.from(data.buffer, data.byteOffset, data.length));
      if (c.length < limit) [type, payload] = [BlobType.lz4, c];
    } else if (algorithm === 'gzip') {
      const c = gzipSync(data, { level: 1 });
      if (c.length < limit) [type, payload] = [BlobType.gzip, c];
    }
    return this.seal(type, payload, id);
  }

  /** Envelope: type byte + payload, sealed under the data key (with `aad`) when encrypted. */
  seal(type: number, payload: Uint8Array, aad: string): Buffer {
    if (!this.dataKey) {
      const out = Buffer.allocUnsafe(1 + payload.length);
      out[0] = type;
      out.set(payload, 1);
      return out;
    }
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.dataKey, nonce);
    c.setAAD(Buffer.from(aad, 'utf8'));
    return Buffer.concat([nonce, c.update(Buffer.of(type)), c.update(payload), c.final(), c.getAuthTag()]);
  }

  /** Opens an envelope; returns type byte + payload. Throws (plain Error) when the seal fails. */
  unseal(blob: Uint8Array, aad: string): Buffer {
    const envelope = Buffer.from(blob.buffer, blob.byteOffset, blob.length);
    if (!this.dataKey) return envelope;
    if (envelope.length < 29) throw new Error('sealed blob is truncated');
    const d = createDecipheriv('aes-256-gcm', this.dataKey, envelope.subarray(0, 12));
    d.setAAD(Buffer.from(aad, 'utf8'));
    d.setAuthTag(envelope.subarray(envelope.length - 16));
    return Buffer.concat([d.update(envelope.subarray(12, envelope.length - 16)), d.final()]);
  }

  /**
   * Opens, decompresses and checks a blob against its id, writing the plaintext into `out`
   * (exactly the chunk's length) without an intermediate copy for zstd blobs. `CORRUPT` when the
   * seal, the compression or the id does not check out — then `out` holds garbage, never bytes
   * that pass for the chunk.
   */
  decodeInto(blob: Uint8Array, id: string, out: Buffer): void {
    try {
      const envelope = this.unseal(blob, id);
      if (envelope.length < 1) throw new Error('empty blob');
      const payload = envelope.subarray(1);
      let n: number;
      switch (envelope[0]) {
        case BlobType.none:
          n = payload.length === out.length ? payload.copy(out) : -1;
          break;
        case BlobType.zstd:
          this.dctx ??= new (zstdBinding().DCtx)();
          n = this.dctx.decompress(out, payload);
          break;
        case BlobType.lz4: {
          const d = lz4Binding().uncompressSync(payload);
          n = d.length === out.length ? d.copy(out) : -1;
          break;
        }
        case BlobType.gzip: {
          const d = gunzipSync(payload);
          n = d.length === out.length ? d.copy(out) : -1;
          break;
        }
        default:
          throw new Error(`unknown blob type ${envelope[0]}`);
      }
      if (n !== out.length) throw new Error(`plaintext length differs from ${out.length}`);
      if (this.chunkId(out) !== id) throw new Error('content does not match its id');
    } catch (cause) {
      throw new CairnError('CORRUPT', `chunk ${id} is damaged: ${(cause as Error).message}`, { cause, details: { chunk: id } });
    }
  }
}

/** Seals a metadata document (manifest, index, record): zstd-compressed JSON, `label` as associated data. */
export function encodeDocument(codec: ChunkCodec, doc: unknown, label: string): Buffer {
  const json = Buffer.from(JSON.stringify(doc), 'utf8');
  return codec.seal(BlobType.zstd, zstdSimple().compress(json, { compressionLevel: 3 }), label);
}

/** Opens a metadata document. `CORRUPT` when damaged, sealed for another label, or not JSON. */
export function decodeDocument<T>(codec: ChunkCodec, blob: Uint8Array, label: string): T {
  try {
    const envelope = codec.unseal(blob, label);
    if (envelope[0] !== BlobType.zstd) throw new Error(`unexpected document type ${envelope[0]}`);
    return JSON.parse(zstdSimple().decompress(envelope.subarray(1)).toString('utf8')) as T;
  } catch (cause) {
    throw new CairnError('CORRUPT', `${label} is damaged: ${(cause as Error).message}`, { cause });
  }
}
