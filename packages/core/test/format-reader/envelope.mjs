// Blobs and sealed documents, read from docs/repository-format.md alone ("Blobs (the envelope)",
// "Sealed documents"). Imports no Cairn code: node built-ins and the zstd/lz4 libraries only.
import { createDecipheriv, createHash, createHmac } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { DecompressStream } from 'zstd-napi';
import { uncompressSync as lz4Uncompress } from 'lz4-napi';
import { FormatError } from './format-error.mjs';

const NONCE = 12;
const TAG = 16;
const MiB = 1024 * 1024;
const ZSTD_MAGIC = 0xfd2fb528;

/**
 * Opens blobs and sealed documents of one repository.
 * `keys` is `{ dataKey, idKey }` for an encrypted repository, `null` for an unencrypted one.
 */
export class Envelope {
  constructor(keys) {
    this.keys = keys;
    /** How many blobs of each envelope type (0–3) this reader has opened. */
    this.blobTypes = [0, 0, 0, 0];
  }

  /** The chunk id (or page id) of `bytes`: SHA-256, or HMAC-SHA-256 under the id key. */
  idOf(bytes) {
    if (!this.keys) return createHash('sha256').update(bytes).digest('hex');
    return createHmac('sha256', this.keys.idKey).update(bytes).digest('hex');
  }

  /** The envelope inside a stored blob or document; `aad` is the chunk id or the document's label. */
  unseal(stored, aad, what) {
    if (!this.keys) return stored;
    if (stored.length < NONCE + TAG) throw new FormatError('CORRUPT', `${what}: ${stored.length} bytes, too short for a seal`);
    const decipher = createDecipheriv('aes-256-gcm', this.keys.dataKey, stored.subarray(0, NONCE));
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(stored.subarray(stored.length - TAG));
    try {
      return Buffer.concat([decipher.update(stored.subarray(NONCE, stored.length - TAG)), decipher.final()]);
    } catch (err) {
      throw new FormatError('CORRUPT', `${what}: seal does not open`, err);
    }
  }

  /**
   * The plaintext of a chunk's blob, checked: its length must be `rawLength` and its id `chunkId`.
   * Any failure is `CORRUPT`.
   */
  async openBlob(stored, chunkId, rawLength) {
    const what = `chunk ${chunkId}`;
    const env = this.unseal(stored, chunkId, what);
    if (env.length < 1) throw new FormatError('CORRUPT', `${what}: empty envelope`);
    const payload = env.subarray(1);
    let plain;
    try {
      switch (env[0]) {
        case 0:
          plain = payload;
          break;
        case 1:
          plain = await zstdDecompress(payload, rawLength, what);
          break;
        case 2: {
          if (payload.length < 4) throw new FormatError('CORRUPT', `${what}: lz4 payload too short`);
          const announced = payload.readUInt32LE(0);
          if (announced !== rawLength) throw new FormatError('CORRUPT', `${what}: lz4 announces ${announced} bytes, index says ${rawLength}`);
          plain = lz4Uncompress(payload);
          break;
        }
        case 3:
          plain = gunzipSync(payload, { maxOutputLength: Math.max(rawLength, 1) });
          break;
        default:
          throw new FormatError('CORRUPT', `${what}: unknown blob type ${env[0]}`);
      }
    } catch (err) {
      if (err instanceof FormatError) throw err;
      throw new FormatError('CORRUPT', `${what}: payload does not decompress`, err);
    }
    if (plain.length !== rawLength) throw new FormatError('CORRUPT', `${what}: ${plain.length} bytes, index says ${rawLength}`);
    if (this.idOf(plain) !== chunkId) throw new FormatError('CORRUPT', `${what}: content does not match its id`);
    this.blobTypes[env[0]]++;
    return plain;
  }

  /**
   * The JSON text (bytes) of a sealed document whose label is `label`. The text is bounded by
   * 256 MiB or 32 times the sealed size, whichever is more; a larger one is `CORRUPT`.
   */
  async openDocumentText(stored, label) {
    const env = this.unseal(stored, label, label);
    if (env.length < 1 || env[0] !== 1) throw new FormatError('CORRUPT', `${label}: document envelope is not type 1 (zstd)`);
    const bound = Math.max(256 * MiB, 32 * stored.length);
    try {
      return await zstdDecompress(env.subarray(1), bound, label);
    } catch (err) {
      if (err instanceof FormatError) throw err;
      throw new FormatError('CORRUPT', `${label}: document does not decompress`, err);
    }
  }

  /** The parsed JSON of a sealed document. */
  async openDocument(stored, label) {
    const text = await this.openDocumentText(stored, label);
    try {
      return JSON.parse(text.toString('utf8'));
    } catch (err) {
      throw new FormatError('CORRUPT', `${label}: not JSON`, err);
    }
  }
}

/**
 * Decompresses zstd frames, refusing output past `limit` (`CORRUPT`): at once when the first frame
 * announces more, otherwise once the count passes it. Callers check an exact length themselves.
 */
async function zstdDecompress(data, limit, what) {
  const announced = frameContentSize(data);
  if (announced !== undefined && announced > limit) throw new FormatError('CORRUPT', `${what}: zstd frame announces ${announced} bytes, more than ${limit}`);
  return new Promise((resolve, reject) => {
    const stream = new DecompressStream();
    const parts = [];
    let total = 0;
    stream.on('data', (part) => {
      total += part.length;
      if (total > limit) {
        stream.destroy();
        reject(new FormatError('CORRUPT', `${what}: decompresses past ${limit} bytes`));
        return;
      }
      parts.push(part);
    });
    stream.on('error', (err) => reject(new FormatError('CORRUPT', `${what}: zstd frame does not decompress`, err)));
    stream.on('end', () => resolve(Buffer.concat(parts, total)));
    stream.end(data);
  });
}

/** The content size the first zstd frame of `data` announces, or undefined when it announces none. */
function frameContentSize(data) {
  if (data.length < 5 || data.readUInt32LE(0) !== ZSTD_MAGIC) throw new FormatError('CORRUPT', 'not a zstd frame');
  const fhd = data[4];
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const dictFlag = fhd & 3;
  let pos = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictFlag];
  const fcsBytes = fcsFlag === 0 ? (singleSegment ? 1 : 0) : [0, 2, 4, 8][fcsFlag];
  if (fcsBytes === 0) return undefined;
  if (data.length < pos + fcsBytes) throw new FormatError('CORRUPT', 'truncated zstd frame header');
  if (fcsBytes === 1) return data[pos];
  if (fcsBytes === 2) return data.readUInt16LE(pos) + 256;
  if (fcsBytes === 4) return data.readUInt32LE(pos);
  return Number(data.readBigUInt64LE(pos));
}
