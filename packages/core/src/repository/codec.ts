/**
 * Chunk ids and the blob envelope, as pure functions shared by the worker threads and the
 * inline path. Envelope: type byte + payload, AES-256-GCM sealed (nonce | ciphertext | tag, the
 * chunk id as associated data) when the repository is encrypted.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, randomFillSync } from 'node:crypto';
import { createRequire } from 'node:module';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { CompressionAlgorithm } from '../contracts/backup-service.js';
import { CairnError } from '../errors.js';
import { BlobType } from './format.js';
import { ChunkList } from './chunk-list.js';

const require = createRequire(import.meta.url);

const NONCE_LENGTH = 12;
const TAG_LENGTH = 16;
/** Nonce + type byte + tag: the most an envelope adds to its payload. */
const ENVELOPE_OVERHEAD = NONCE_LENGTH + 1 + TAG_LENGTH;
/**
 * Bytes per cipher update. node:crypto returns each update's output in a new buffer; a whole
 * 128 KiB chunk at once would be an allocation above glibc's default mmap threshold per chunk
 * (an mmap, page faults and an munmap each, or, once glibc raises its threshold, fragmented
 * malloc arenas that grew with the volume). 32 KiB outputs come from the heap and are reused.
 */
const CIPHER_PIECE = 32 * 1024;

/** Runs `cipher` over `src` in CIPHER_PIECE updates, writing the output to `dst` (may be `src`). */
function cipherInto(cipher: { update(data: Uint8Array): Buffer }, src: Uint8Array, dst: Buffer): void {
  for (let at = 0; at < src.length; at += CIPHER_PIECE) cipher.update(src.subarray(at, at + CIPHER_PIECE)).copy(dst, at);
}

interface ZstdBinding {
  CCtx: new () => {
    compress(dst: Uint8Array, src: Uint8Array, level: number): number;
    setParameter(param: number, value: number): void;
    setPledgedSrcSize(size: number): void;
    reset(directive: number): void;
    /** [bytes still to flush (0 when done, for `end`), bytes written to dst, bytes taken from src] */
    compressStream2(dst: Uint8Array, src: Uint8Array, endOp: number): [number, number, number];
  };
  DCtx: new () => {
    decompress(dst: Uint8Array, src: Uint8Array): number;
    /** [0 once a frame is decoded and flushed (else more to come), bytes written to dst, bytes taken from src] */
    decompressStream(dst: Uint8Array, src: Uint8Array): [number, number, number];
    reset(directive: number): void;
  };
  compressBound(length: number): number;
  /** A frame's announced content size, null when it announces none; throws for a damaged header. */
  getFrameContentSize(frame: Uint8Array): number | null;
  /** Bytes of the first frame; throws when there is no whole frame. */
  findFrameCompressedSize(frames: Uint8Array): number;
  dStreamOutSize(): number;
  CParameter: { compressionLevel: number; windowLog: number };
  EndDirective: { continue: number; end: number };
  ResetDirective: { sessionOnly: number };
  cStreamOutSize(): number;
}
interface Lz4 {
  compressSync(data: Buffer): Buffer;
  uncompressSync(data: Uint8Array): Buffer;
}

let zstd: ZstdBinding | undefined;
let lz4: Lz4 | undefined;
const zstdBinding = (): ZstdBinding => (zstd ??= require('zstd-napi/binding') as ZstdBinding);
const lz4Binding = (): Lz4 => (lz4 ??= require('lz4-napi') as Lz4);

/**
 * Nonces drawn from the CSPRNG at once: a randomFillSync call costs 4-5 µs however few bytes it
 * fills (20 µs a chunk in a busy worker, measured: 0.1 s of each worker's 4 s in a 2 GiB full
 * backup); slicing a pool costs 0.3 µs. Each nonce is used once: the pool is refilled, never
 * rewound. A pool lives in one ChunkCodec, so in one thread (each worker makes its own).
 *
 * What the pool holds is not yet the nonce: each is masked (XOR) with bytes determined by what it
 * seals (see takeNonce), so that two copies of one process image — a VM snapshot restored twice,
 * which replays the pool and the CSPRNG alike — that seal different things still use different
 * nonces. Readers take the nonce from the blob, so the mask is the writer's alone (no format change).
 */
const NONCES_PER_FILL = 1024;

/** Per-thread codec state: compression contexts are reused, not reallocated. */
export class ChunkCodec {
  private cctx?: InstanceType<ZstdBinding['CCtx']>;
  private readonly nonces = Buffer.alloc(NONCE_LENGTH * NONCES_PER_FILL);
  /** Nonces of `nonces` not yet used start here. */
  private nextNonce = this.nonces.length;
  private dctx?: InstanceType<ZstdBinding['DCtx']>;
  /** Deciphered payloads awaiting decompression (grown to the largest seen; never shared). */
  private scratch = Buffer.alloc(0);
  /** The mask of the nonce being taken (see takeNonce). */
  private readonly mask = Buffer.alloc(NONCE_LENGTH);
  /** Key of the document nonce masks, derived from the data key (never used to encrypt). */
  private readonly maskKey: Buffer | undefined;

  constructor(
    private readonly idKey: Buffer | undefined,
    private readonly dataKey: Buffer | undefined,
    /** zstd level. Default 1 (measured: level 1 is ~30% faster than 3 for ~10% more bytes). */
    private readonly zstdLevel = 1,
  ) {
    this.maskKey = dataKey ? createHmac('sha256', dataKey).update('cairn nonce mask v1').digest() : undefined;
  }

  /** SHA-256 of the plaintext, or HMAC-SHA-256 under the repository's id key. */
  chunkId(data: Uint8Array): string {
    return (this.idKey ? createHmac('sha256', this.idKey) : createHash('sha256')).update(data).digest('hex');
  }

  /** Bytes an encoded chunk of `length` plaintext bytes may take (envelope overhead included). */
  static maxEncodedLength(length: number): number {
    return length + ENVELOPE_OVERHEAD;
  }

  /**
   * Room encodeInto needs for `length` plaintext bytes: the largest blob, or the compressor's
   * worst case when that is larger (zstd then never fails for want of room: an exception per
   * incompressible chunk cost 5 µs and a captured stack trace each).
   */
  static encodeRoom(length: number): number {
    return Math.max(ChunkCodec.maxEncodedLength(length), ENVELOPE_OVERHEAD + zstdBinding().compressBound(length));
  }

  /** Where a blob's payload starts, from the blob's first byte (after the nonce and type byte). */
  get payloadOffset(): number {
    return (this.dataKey ? NONCE_LENGTH : 0) + 1;
  }

  /**
   * Compresses (keeping the plaintext when compression saves < 3%) and seals a chunk into `out`
   * (at least encodeRoom(data.length) bytes); returns the encoded length, at most
   * maxEncodedLength(data.length). The compressor
   * writes straight into `out`, so the only copy is the cipher's output (or the plaintext, when
   * neither compression nor encryption applies). Copies into shared memory run at full speed only
   * when source and target share their alignment mod 8: callers place `out` so that
   * `out.byteOffset + payloadOffset` is a multiple of 8 (see TaskRunner).
   */
  encodeInto(data: Uint8Array, algorithm: CompressionAlgorithm, id: string, out: Buffer): number {
    const head = this.dataKey ? NONCE_LENGTH : 0;
    const body = out.subarray(head + 1); // type byte at out[head], payload after it
    const limit = Math.floor(data.length * 0.97);
    let type: number = BlobType.none;
    let n = data.length;
    if (algorithm === 'zstd') {
      this.cctx ??= new (zstdBinding().CCtx)();
      const c = this.cctx.compress(body.subarray(0, zstdBinding().compressBound(data.length)), data, this.zstdLevel);
      if (c < limit) [type, n] = [BlobType.zstd, c];
    } else if (algorithm === 'lz4') {
      const c = lz4Binding().compressSync(Buffer.from(data.buffer, data.byteOffset, data.length));
      if (c.length < limit) [type, n] = [BlobType.lz4, c.copy(body)];
    } else if (algorithm === 'gzip') {
      const c = gzipSync(data, { level: 1 });
      if (c.length < limit) [type, n] = [BlobType.gzip, c.copy(body)];
    }
    if (!this.dataKey) {
      out[0] = type;
      if (type === BlobType.none) body.set(data);
      return 1 + n;
    }
    // The mask: the chunk's id (a keyed hash of its plaintext), its type and stored length.
    this.mask.fill(0);
    this.mask.write(id, 0, NONCE_LENGTH, 'hex');
    this.mask[0]! ^= type;
    this.mask.writeUInt32BE((this.mask.readUInt32BE(8) ^ n) >>> 0, 8);
    this.takeNonce(out);
    const c = createCipheriv('aes-256-gcm', this.dataKey, out.subarray(0, NONCE_LENGTH));
    c.setAAD(Buffer.from(id, 'utf8'));
    // GCM is a stream cipher: split updates give the ciphertext of the whole, and the payload's
    // ciphertext starts a fresh buffer, so it lands in `out` with matching alignment.
    out[head] = c.update(Buffer.of(type))[0]!;
    cipherInto(c, type === BlobType.none ? data : body.subarray(0, n), body);
    c.final();
    c.getAuthTag().copy(out, head + 1 + n);
    return head + 1 + n + TAG_LENGTH;
  }

  /**
   * Writes a fresh nonce at the start of `out`: random bytes of the pool (never handed out
   * before) XOR `mask`, which the caller sets from what the nonce seals. The nonce is as random
   * as the pool; a replayed pool repeats a nonce only for the same mask: for a document the same
   * sealed bytes, for a chunk the same id, type and stored length (the same compressed plaintext).
   */
  private takeNonce(out: Buffer): void {
    if (this.nextNonce === this.nonces.length) {
      randomFillSync(this.nonces);
      this.nextNonce = 0;
    }
    for (let i = 0; i < NONCE_LENGTH; i++) out[i] = this.nonces[this.nextNonce + i]! ^ this.mask[i]!;
    this.nextNonce += NONCE_LENGTH;
  }

  /** Compresses and seals a chunk into a new Buffer (see encodeInto). */
  encode(data: Uint8Array, algorithm: CompressionAlgorithm, id: string): Buffer {
    const out = Buffer.allocUnsafe(ChunkCodec.encodeRoom(data.length));
    return out.subarray(0, this.encodeInto(data, algorithm, id, out));
  }

  /**
   * Envelope: type byte + payload, sealed under the data key (with `aad`) when encrypted. The
   * payload may come in pieces (sealed as their concatenation, into one buffer).
   */
  seal(type: number, payload: Uint8Array | readonly Uint8Array[], aad: string): Buffer {
    const pieces = payload instanceof Uint8Array ? [payload] : payload;
    const length = pieces.reduce((n, p) => n + p.length, 0);
    const head = this.dataKey ? NONCE_LENGTH : 0;
    const out = Buffer.allocUnsafe(head + 1 + length + (this.dataKey ? TAG_LENGTH : 0));
    let at = head + 1;
    if (!this.dataKey) {
      out[0] = type;
      for (const p of pieces) (out.set(p, at), (at += p.length));
      return out;
    }
    // The mask: a keyed hash of everything sealed (documents are few; a label, unlike a chunk's
    // id, does not determine the content: a catalog record is rewritten under its label).
    const h = createHmac('sha256', this.maskKey!).update(Buffer.of(type)).update(`${aad}\0`, 'utf8');
    for (const p of pieces) h.update(p);
    h.digest().copy(this.mask, 0, 0, NONCE_LENGTH);
    this.takeNonce(out);
    const c = createCipheriv('aes-256-gcm', this.dataKey, out.subarray(0, NONCE_LENGTH));
    c.setAAD(Buffer.from(aad, 'utf8'));
    out[head] = c.update(Buffer.of(type))[0]!;
    for (const p of pieces) at += c.update(p).copy(out, at);
    c.final();
    c.getAuthTag().copy(out, at);
    return out;
  }

  /**
   * Opens an envelope: its type byte and payload. Throws (plain Error) when the seal fails. When
   * encrypted, the payload is a fresh buffer starting at its first byte (so copying it into
   * aligned shared memory runs at full speed).
   */
  unseal(blob: Uint8Array, aad: string): { type: number; payload: Buffer } {
    return this.open(blob, aad, (length) => Buffer.allocUnsafe(length));
  }

  /**
   * unseal, deciphering the payload (in CIPHER_PIECE updates) into the buffer `room(length,
   * type)` gives (at least `length` bytes). Unencrypted payloads are returned in place. Throws
   * (plain Error) when the seal fails; the room then holds garbage.
   */
  private open(blob: Uint8Array, aad: string, room: (length: number, type: number) => Buffer): { type: number; payload: Buffer } {
    const envelope = Buffer.from(blob.buffer, blob.byteOffset, blob.length);
    if (!this.dataKey) {
      if (envelope.length < 1) throw new Error('empty blob');
      return { type: envelope[0]!, payload: envelope.subarray(1) };
    }
    if (envelope.length < NONCE_LENGTH + 1 + TAG_LENGTH) throw new Error('sealed blob is truncated');
    const d = createDecipheriv('aes-256-gcm', this.dataKey, envelope.subarray(0, NONCE_LENGTH));
    d.setAAD(Buffer.from(aad, 'utf8'));
    d.setAuthTag(envelope.subarray(envelope.length - TAG_LENGTH));
    const type = d.update(envelope.subarray(NONCE_LENGTH, NONCE_LENGTH + 1))[0]!;
    const sealed = envelope.subarray(NONCE_LENGTH + 1, envelope.length - TAG_LENGTH);
    const payload = room(sealed.length, type).subarray(0, sealed.length);
    cipherInto(d, sealed, payload);
    d.final(); // throws when the tag does not check out; GCM emits nothing here
    return { type, payload };
  }

  /**
   * Opens, decompresses and checks a blob against its id, writing the plaintext into `out`
   * (exactly the chunk's length) without an intermediate copy for zstd blobs. `CORRUPT` when the
   * seal, the compression or the id does not check out — then `out` holds garbage, never bytes
   * that pass for the chunk.
   */
  decodeInto(blob: Uint8Array, id: string, out: Buffer): void {
    try {
      // A stored plaintext is deciphered straight into `out`; anything else into scratch memory
      // reused across chunks, and decompressed from there.
      const { type, payload } = this.open(blob, id, (length, type) =>
        type === BlobType.none && length === out.length ? out : length <= this.scratch.length ? this.scratch : (this.scratch = Buffer.allocUnsafeSlow(length)),
      );
      let n: number;
      switch (type) {
        case BlobType.none:
          n = payload.length !== out.length ? -1 : payload.buffer === out.buffer && payload.byteOffset === out.byteOffset ? out.length : payload.copy(out);
          break;
        case BlobType.zstd:
          this.dctx ??= new (zstdBinding().DCtx)();
          n = this.dctx.decompress(out, payload);
          break;
        case BlobType.lz4: {
          // lz4-napi's frames begin with the plaintext's length (u32 LE), which it allocates:
          // checked first, so a damaged blob cannot make it allocate gigabytes.
          if (payload.length < 4 || payload.readUInt32LE(0) !== out.length) throw new Error(`lz4 frame announces ${payload.length < 4 ? 'nothing' : payload.readUInt32LE(0)} bytes, not ${out.length}`);
          const d = lz4Binding().uncompressSync(payload);
          n = d.length === out.length ? d.copy(out) : -1;
          break;
        }
        case BlobType.gzip: {
          const d = gunzipSync(payload, { maxOutputLength: out.length }); // a larger output throws
          n = d.length === out.length ? d.copy(out) : -1;
          break;
        }
        default:
          throw new Error(`unknown blob type ${type}`);
      }
      if (n !== out.length) throw new Error(`plaintext length differs from ${out.length}`);
      if (this.chunkId(out) !== id) throw new Error('content does not match its id');
    } catch (cause) {
      throw new CairnError('CORRUPT', `chunk ${id} is damaged: ${(cause as Error).message}`, { cause, details: { chunk: id } });
    }
  }
}

/** Elements of a document's bulk array serialized at a time. */
const JSON_SLICE = 4096;

/**
 * The JSON text of `doc` in pieces: the array property `bulk` (moved to the end) a slice at a
 * time, so a manifest's chunk list is never one string (a ChunkList's slices come as bytes, with
 * no string per chunk, in one buffer that the next slice overwrites: consume each piece before
 * asking for the next). Joined, the pieces are valid JSON that parses to the same document.
 */
export function* jsonPieces(doc: unknown, bulk?: string): Generator<string | Buffer> {
  const list = bulk && doc && typeof doc === 'object' ? (doc as Record<string, unknown>)[bulk] : undefined;
  if (!Array.isArray(list) && !(list instanceof ChunkList)) {
    yield JSON.stringify(doc);
    return;
  }
  const { [bulk!]: _, ...rest } = doc as Record<string, unknown>;
  const head = JSON.stringify(rest);
  yield `${head.slice(0, -1)}${head.length > 2 ? ',' : ''}${JSON.stringify(bulk)}:[`;
  // A ChunkList's slices are written into one buffer, reused: each is consumed before the next.
  const room = list instanceof ChunkList ? Buffer.allocUnsafe(ChunkList.jsonRoom(JSON_SLICE)) : undefined;
  for (let i = 0; i < list.length; i += JSON_SLICE) {
    if (list instanceof ChunkList) yield list.jsonBytes(i, i + JSON_SLICE, i > 0, room);
    else yield `${i > 0 ? ',' : ''}${JSON.stringify(list.slice(i, i + JSON_SLICE)).slice(1, -1)}`;
  }
  yield ']}';
}

/** The context that compresses documents; they are encoded one at a time, synchronously. */
let documentContext: InstanceType<ZstdBinding['CCtx']> | undefined;

/**
 * Seals a metadata document (manifest, index, record): zstd-compressed JSON (level 3, one frame
 * that records its content size), `label` as associated data. With `bulk`, that array property
 * is serialized and compressed a slice at a time (see jsonPieces): an 8 GiB backup's manifest
 * then peaks at its compressed size plus a slice, instead of ~4 times its JSON text.
 */
export function encodeDocument(codec: ChunkCodec, doc: unknown, label: string, bulk?: string): Buffer {
  return sealPieces(codec, () => jsonPieces(doc, bulk), label);
}

/**
 * Seals JSON text given in pieces as a document (see encodeDocument). `pieces` is called twice
 * (once to size the frame, once to compress) and must give the same text both times.
 * `INVALID_INPUT` for text beyond documentLimit, which readers refuse.
 */
export function sealPieces(codec: ChunkCodec, pieces: () => Iterable<string | Buffer>, label: string): Buffer {
  const z = zstdBinding();
  let size = 0;
  for (const piece of pieces()) size += typeof piece === 'string' ? Buffer.byteLength(piece, 'utf8') : piece.length;
  if (!documentContext) {
    documentContext = new z.CCtx();
    documentContext.setParameter(z.CParameter.compressionLevel, 3);
    // Documents are mostly hex ids, which compress by entropy coding, not by distant matches: a
    // 128 KiB window bounds the context's memory for any size of document at the same ratio
    // (measured on an 8 GiB backup's manifest: 0.518 → 0.510 of the JSON, 1 MiB less RSS).
    documentContext.setParameter(z.CParameter.windowLog, 17);
  }
  const cctx = documentContext;
  cctx.reset(z.ResetDirective.sessionOnly); // a frame abandoned by an earlier failure is dropped
  cctx.setPledgedSrcSize(size);
  const room = Buffer.allocUnsafe(z.cStreamOutSize());
  const out: Buffer[] = [];
  const drain = (src: Uint8Array, op: number): number => {
    const [left, written, taken] = cctx.compressStream2(room, src, op);
    if (written > 0) out.push(Buffer.from(room.subarray(0, written)));
    return op === z.EndDirective.end ? left : src.length - taken;
  };
  for (const piece of pieces()) {
    let src: Uint8Array = typeof piece === 'string' ? Buffer.from(piece, 'utf8') : piece;
    while (src.length > 0) src = src.subarray(src.length - drain(src, z.EndDirective.continue));
  }
  while (drain(Buffer.alloc(0), z.EndDirective.end) > 0);
  const sealed = codec.seal(BlobType.zstd, out, label);
  // Never written when no reader would open it (only documents with outsized user content get here).
  if (size > documentLimit(sealed.length)) throw new CairnError('INVALID_INPUT', `${label} would hold ${size} bytes of JSON, more than the ${documentLimit(sealed.length)} a reader accepts`);
  return sealed;
}

/**
 * The JSON text of a sealed document may hold at most MAX_DOCUMENT_BYTES, or DOCUMENT_EXPANSION
 * times the document's stored size when that is more (docs/repository-format.md). Every document
 * Cairn writes is far below: a page ~270 KiB, an index object ~12 MiB, a manifest of format 4 a
 * few MiB; inline chunk lists of format 3 hold 67 bytes per chunk but compress about 2:1 (ids)
 * and the floor covers 50 million zero chunks' `null`s. A damaged or hostile document then costs
 * a reader that much at most, whatever its frame header announces.
 */
export const MAX_DOCUMENT_BYTES = 256 * 1024 * 1024;
export const DOCUMENT_EXPANSION = 32;
export const documentLimit = (storedBytes: number): number => Math.max(MAX_DOCUMENT_BYTES, DOCUMENT_EXPANSION * storedBytes);

/** The context that decompresses documents; they are opened one at a time, synchronously. */
let documentDecompressor: InstanceType<ZstdBinding['DCtx']> | undefined;

/**
 * Decompresses a document's zstd frames, refusing (plain Error) more than `limit` bytes of text
 * before allocating for them: announced content sizes are checked first and allocated exactly;
 * frames that announce none are decompressed in steps, counted as they come.
 */
function decompressDocument(frames: Uint8Array, limit: number): Buffer {
  const z = zstdBinding();
  const dctx = (documentDecompressor ??= new z.DCtx());
  dctx.reset(z.ResetDirective.sessionOnly); // a frame left half-read by an earlier failure is dropped
  const tooLarge = (what: string): Error => new Error(`${what} more than the ${limit} bytes of text it may hold`);
  let announced: number | null = 0;
  for (let rest = frames; rest.length > 0 && announced !== null; rest = rest.subarray(z.findFrameCompressedSize(rest))) {
    const n = z.getFrameContentSize(rest);
    announced = n === null ? null : announced + n;
    if (announced !== null && announced > limit) throw tooLarge(`its frames announce ${announced} bytes,`);
  }
  if (announced !== null) {
    const out = Buffer.allocUnsafe(announced);
    if (dctx.decompress(out, frames) !== announced) throw new Error(`its frames do not hold the ${announced} bytes they announce`);
    return out;
  }
  // Output goes into a room until it is full, and only then into a new one: decompressStream
  // returns at every frame's end, so a room per call cost a whole room per frame (a 360 KB
  // document of 20,000 tiny frames allocated 3.9 GB). Rooms grow with the text so far (few of them
  // for a large document) and never past limit + 1 in all: what is allocated is the text, at most
  // one room beyond it, and the joined result.
  const pieces: Buffer[] = [];
  let size = 0;
  let rest = frames;
  let room = Buffer.alloc(0);
  let used = 0;
  for (;;) {
    if (used === room.length) {
      if (used > 0) pieces.push(room);
      room = Buffer.allocUnsafe(Math.min(Math.max(z.dStreamOutSize(), size), limit - size + 1));
      used = 0;
    }
    const [more, written, taken] = dctx.decompressStream(room.subarray(used), rest);
    used += written;
    size += written;
    if (size > limit) throw tooLarge('it decompresses to');
    rest = rest.subarray(taken);
    if (rest.length === 0 && more === 0) return Buffer.concat([...pieces, room.subarray(0, used)], size);
    if (written === 0 && taken === 0) throw new Error('its last frame is truncated');
  }
}

/** Opens a metadata document. `CORRUPT` when damaged, sealed for another label, or not JSON. */
export function decodeDocument<T>(codec: ChunkCodec, blob: Uint8Array, label: string): T {
  const json = openDocument(codec, blob, label);
  try {
    return JSON.parse(json.toString('utf8')) as T;
  } catch (cause) {
    throw new CairnError('CORRUPT', `${label} is damaged: ${(cause as Error).message}`, { cause });
  }
}

/**
 * A metadata document's JSON text as bytes (opened and decompressed, not parsed). `CORRUPT` when
 * damaged, sealed for another label, or holding more than documentLimit(blob.length) bytes (then
 * refused before anything is allocated for its text).
 */
export function openDocument(codec: ChunkCodec, blob: Uint8Array, label: string): Buffer {
  try {
    const { type, payload } = codec.unseal(blob, label);
    if (type !== BlobType.zstd) throw new Error(`unexpected document type ${type}`);
    return decompressDocument(payload, documentLimit(blob.length));
  } catch (cause) {
    throw new CairnError('CORRUPT', `${label} is damaged: ${(cause as Error).message}`, { cause });
  }
}
