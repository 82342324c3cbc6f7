// An independent reader of a Cairn repository in a posix directory, written from
// docs/repository-format.md alone. Imports no Cairn package: node built-ins, zstd-napi and lz4-napi.
//
//   const repo = await openRepository(dir, { passphrase });
//   const backups = await repo.listBackups();
//   await repo.restore(backupId, '/tmp/out.img');
import { createDecipheriv, scrypt } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { promisify } from 'node:util';
import { Envelope } from './envelope.mjs';
import { FormatError } from './format-error.mjs';
import { PosixObjects } from './posix-objects.mjs';

export { FormatError } from './format-error.mjs';

/** The newest format version this reader knows. */
export const READER_VERSION = 5;

const KiB = 1024;
const MiB = 1024 * KiB;
const HEX64 = /^[0-9a-f]{64}$/;
const U32_MAX = 2 ** 32 - 1;
const COMPRESSIONS = ['zstd', 'lz4', 'gzip', 'none'];
const scryptAsync = promisify(scrypt);

/**
 * Opens the repository in directory `dir`: reads and checks `config`, derives the keys when it is
 * encrypted, and loads the index. Fails with `CORRUPT` (bad config), `NOT_SUPPORTED` (a newer
 * version), `INVALID_INPUT` (wrong, missing or unexpected passphrase).
 * @param {string} dir
 * @param {{ passphrase?: string }} [options]
 */
export async function openRepository(dir, options = {}) {
  const objects = new PosixObjects(dir);
  let config;
  try {
    config = JSON.parse((await objects.get('config')).toString('utf8'));
  } catch (err) {
    if (err instanceof FormatError) throw err;
    throw new FormatError('CORRUPT', 'config is not JSON', err);
  }
  checkConfig(config);
  const keys = await deriveKeys(config, options.passphrase);
  const envelope = new Envelope(keys);
  const index = await loadIndex(objects, envelope);
  return new RepositoryReader(objects, config, envelope, index);
}

/** Checks every rule "config" gives; throws `CORRUPT` or `NOT_SUPPORTED`. */
export function checkConfig(c) {
  const bad = (why) => new FormatError('CORRUPT', `config: ${why}`);
  if (!c || typeof c !== 'object' || c.format !== 'cairn-repository') throw bad('format is not cairn-repository');
  if (!Number.isInteger(c.version) || c.version < 1) throw bad('version is not a positive integer');
  if (c.version > READER_VERSION) throw new FormatError('NOT_SUPPORTED', `config: version ${c.version} is newer than ${READER_VERSION}`);
  for (const f of ['id', 'createdAt']) if (typeof c[f] !== 'string') throw bad(`${f} is not a string`);
  const cs = c.chunkSize;
  if (!Number.isInteger(cs) || cs < 64 * KiB || cs > 16 * MiB || (cs & (cs - 1)) !== 0) throw bad('chunkSize out of bounds');
  if (!Number.isInteger(c.packSize) || c.packSize < MiB || c.packSize > 256 * MiB) throw bad('packSize out of bounds');
  if (!COMPRESSIONS.includes(c.compression)) throw bad('unknown compression');
  if (!('encryption' in c)) throw bad('encryption is missing');
  const e = c.encryption;
  if (e === null) return;
  if (typeof e !== 'object' || e.kdf !== 'scrypt') throw bad('encryption.kdf is not scrypt');
  const { N, r, p } = e;
  if (!Number.isInteger(N) || N < 2 || N > 2 ** 24 || (N & (N - 1)) !== 0) throw bad('scrypt N out of bounds');
  if (!Number.isInteger(r) || r < 1 || r > 32) throw bad('scrypt r out of bounds');
  if (!Number.isInteger(p) || p < 1 || p > 16) throw bad('scrypt p out of bounds');
  if (128 * N * r > 1024 * MiB) throw bad('scrypt memory above 1 GiB');
  if (strictBase64(e.salt) === undefined) throw bad('salt is not base64');
  if (strictBase64(e.sealedKey)?.length !== 92) throw bad('sealedKey is not base64 of 92 bytes');
}

/** `{ dataKey, idKey }`, or null for an unencrypted repository. */
async function deriveKeys(config, passphrase) {
  const e = config.encryption;
  if (e === null) {
    if (passphrase !== undefined) throw new FormatError('INVALID_INPUT', 'a passphrase was given for an unencrypted repository');
    return null;
  }
  if (passphrase === undefined) throw new FormatError('INVALID_INPUT', 'the repository is encrypted: a passphrase is needed');
  const kek = await scryptAsync(Buffer.from(passphrase, 'utf8'), strictBase64(e.salt), 32, {
    N: e.N, r: e.r, p: e.p, maxmem: 128 * e.N * e.r + 64 * MiB,
  });
  const sealed = strictBase64(e.sealedKey);
  const decipher = createDecipheriv('aes-256-gcm', kek, sealed.subarray(0, 12));
  decipher.setAuthTag(sealed.subarray(76));
  let master;
  try {
    master = Buffer.concat([decipher.update(sealed.subarray(12, 76)), decipher.final()]);
  } catch (err) {
    throw new FormatError('INVALID_INPUT', 'wrong passphrase', err);
  }
  return { dataKey: master.subarray(0, 32), idKey: master.subarray(32, 64) };
}

function strictBase64(s) {
  if (typeof s !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return undefined;
  return Buffer.from(s, 'base64');
}

/**
 * chunk id → `{ packId, offset, length, rawLength }` from every index object, the first naming
 * kept (index objects in key order). A damaged index object is skipped whole: its chunks are then
 * in no pack, and a restore that needs them fails `NOT_FOUND`.
 */
async function loadIndex(objects, envelope) {
  const index = new Map();
  for (const key of await objects.list('index/')) {
    const indexId = key.slice('index/'.length);
    if (!HEX64.test(indexId)) continue;
    let doc;
    try {
      doc = await envelope.openDocument(await objects.get(key), `index:${indexId}`);
    } catch (err) {
      if (err instanceof FormatError && err.code === 'CORRUPT') continue;
      throw err;
    }
    const packs = indexPacks(doc, indexId);
    if (!packs) continue;
    for (const [packId, blobs] of packs) {
      for (const [id, offset, length, rawLength] of blobs) {
        if (!index.has(id)) index.set(id, { packId, offset, length, rawLength });
      }
    }
  }
  return index;
}

/** `[[packId, blobs]]` of a version-1 or version-2 index object, or undefined when it is damaged. */
function indexPacks(doc, indexId) {
  let packs;
  if (doc?.version === 1) packs = [[indexId, doc.blobs]];
  else if (doc?.version === 2 && Array.isArray(doc.packs)) packs = doc.packs;
  else return undefined;
  for (const pack of packs) {
    if (!Array.isArray(pack) || pack.length !== 2 || typeof pack[0] !== 'string' || !HEX64.test(pack[0])) return undefined;
    if (!Array.isArray(pack[1])) return undefined;
    for (const b of pack[1]) {
      if (!Array.isArray(b) || b.length !== 4 || typeof b[0] !== 'string' || !HEX64.test(b[0])) return undefined;
      for (const n of b.slice(1)) if (!Number.isInteger(n) || n < 0 || n > U32_MAX) return undefined;
    }
  }
  return packs;
}

class RepositoryReader {
  constructor(objects, config, envelope, index) {
    this.objects = objects;
    this.config = config;
    this.envelope = envelope;
    this.index = index;
  }

  /**
   * Every backup with a manifest, oldest first: `{ backupId, volumeId, size, parentId, createdAt,
   * status }`, `status` from its catalog record (undefined when it has none).
   */
  async listBackups() {
    const out = [];
    for (const key of await this.objects.list('manifests/')) {
      const backupId = key.slice('manifests/'.length);
      const m = await this.readManifest(backupId);
      const record = await this.readRecord(backupId);
      out.push({ backupId, volumeId: m.volumeId, size: m.size, parentId: m.parentId, createdAt: m.createdAt, status: record?.status });
    }
    return out.sort((a, b) => String(a.createdAt).localeCompare(String(b.createdAt)) || a.backupId.localeCompare(b.backupId));
  }

  /** The catalog record of `backupId`, or undefined when there is none. */
  async readRecord(backupId) {
    const key = `catalog/backups/${backupId}`;
    let stored;
    try {
      stored = await this.objects.get(key);
    } catch (err) {
      if (err instanceof FormatError && err.code === 'NOT_FOUND') return undefined;
      throw err;
    }
    return this.envelope.openDocument(stored, key);
  }

  /** The manifest of `backupId`, checked ("Manifests"); `CORRUPT` when it breaks a rule. */
  async readManifest(backupId) {
    const m = await this.envelope.openDocument(await this.objects.get(`manifests/${backupId}`), `manifest:${backupId}`);
    const bad = (why) => new FormatError('CORRUPT', `manifest ${backupId}: ${why}`);
    if (!m || typeof m !== 'object' || Array.isArray(m)) throw bad('not an object');
    if (m.backupId !== backupId) throw bad('names another backup');
    if (!Number.isSafeInteger(m.size) || m.size < 0) throw bad('size is not a non-negative integer');
    const cs = m.chunkSize;
    if (!Number.isInteger(cs) || cs < 64 * KiB || cs > 16 * MiB || (cs & (cs - 1)) !== 0) throw bad(`chunkSize ${cs} out of bounds`);
    const count = Math.ceil(m.size / m.chunkSize);
    if ('chunkPages' in m) {
      if (!Number.isInteger(m.pageChunks) || m.pageChunks < 1 || m.pageChunks > 2 ** 20) throw bad('pageChunks is not an integer from 1 to 2^20');
      if (!Array.isArray(m.chunkPages) || m.chunkPages.length !== Math.ceil(count / m.pageChunks)) throw bad('chunkPages has the wrong length');
      if (!m.chunkPages.every(isIdOrNull)) throw bad('chunkPages holds an entry that is not an id');
    } else if (!Array.isArray(m.chunks) || m.chunks.length !== count || !m.chunks.every(isIdOrNull)) {
      throw bad('inline chunk list is not `count` ids or nulls');
    }
    return m;
  }

  /** Entries `k × pageChunks …` of a paged manifest's chunk list (page `k`). */
  async readPage(m, k) {
    const count = Math.ceil(m.size / m.chunkSize);
    const entries = Math.min((k + 1) * m.pageChunks, count) - k * m.pageChunks;
    const pageId = m.chunkPages[k];
    if (pageId === null) return new Array(entries).fill(null);
    const text = await this.envelope.openDocumentText(await this.objects.get(`chunklists/${pageId}`), `chunklist:${pageId}`);
    if (this.envelope.idOf(text) !== pageId) throw new FormatError('CORRUPT', `chunk list page ${pageId}: text does not match its id`);
    let page;
    try {
      page = JSON.parse(text.toString('utf8'));
    } catch (err) {
      throw new FormatError('CORRUPT', `chunk list page ${pageId}: not JSON`, err);
    }
    if (!Array.isArray(page?.chunks) || page.chunks.length !== entries || !page.chunks.every(isIdOrNull)) {
      throw new FormatError('CORRUPT', `chunk list page ${pageId}: not ${entries} ids or nulls`);
    }
    return page.chunks;
  }

  /** The plaintext of chunk `id`, which must be `expected` bytes long (at most `chunkSize`). */
  async readChunk(id, expected, chunkSize) {
    const entry = this.index.get(id);
    if (!entry) throw new FormatError('NOT_FOUND', `chunk ${id}: in no pack an index object names`);
    if (entry.rawLength !== expected || entry.rawLength > chunkSize || entry.length > chunkSize + 29) {
      throw new FormatError('CORRUPT', `chunk ${id}: index entry (${entry.rawLength} of ${entry.length} bytes) does not fit its place of ${expected}`);
    }
    const stored = await this.objects.getRange(`packs/${entry.packId}`, entry.offset, entry.length);
    return this.envelope.openBlob(stored, id, entry.rawLength);
  }

  /**
   * Writes backup `backupId` to file `outPath` (created or truncated), every chunk verified.
   * Returns `{ size, chunks, zeroChunks, blobTypes }` (`blobTypes[t]`: blobs of envelope type `t`
   * read). Fails `CORRUPT`/`NOT_FOUND` without finishing the file.
   */
  async restore(backupId, outPath) {
    const m = await this.readManifest(backupId);
    const count = Math.ceil(m.size / m.chunkSize);
    const out = await fs.open(outPath, 'w');
    let zeroChunks = 0;
    const before = [...this.envelope.blobTypes];
    try {
      await out.truncate(m.size);
      const paged = 'chunkPages' in m;
      const pageChunks = paged ? m.pageChunks : count;
      for (let k = 0; k * pageChunks < count; k++) {
        const ids = paged ? await this.readPage(m, k) : m.chunks;
        for (let j = 0; j < ids.length; j++) {
          const i = k * pageChunks + j;
          const start = i * m.chunkSize;
          const expected = Math.min(m.chunkSize, m.size - start);
          if (ids[j] === null) {
            zeroChunks++;
            continue;
          }
          const plain = await this.readChunk(ids[j], expected, m.chunkSize);
          await out.write(plain, 0, plain.length, start);
        }
      }
    } finally {
      await out.close();
    }
    return { size: m.size, chunks: count, zeroChunks, blobTypes: this.envelope.blobTypes.map((n, t) => n - before[t]) };
  }
}

function isIdOrNull(e) {
  return e === null || (typeof e === 'string' && HEX64.test(e));
}
