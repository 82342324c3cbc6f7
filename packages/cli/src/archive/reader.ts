import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { CairnError, isCairnError, throwIfAborted, toCairnError, type Attachment } from '@cairn/core';
import * as tar from 'tar-stream';
import { z } from 'zod';
import { ARCHIVE_CHUNK, ARCHIVE_FORMAT, chunkName, MANIFEST_NAME, MAX_METADATA_BYTES, RECORD_ID, SUMS_NAME, VM_CONFIG_NAME, type ArchiveManifest } from './format.js';
import type { ArchiveProgress } from './progress.js';
import { StagingVolume } from './staging.js';
import { isSystemError } from './system-error.js';

export interface ReadArchive {
  manifest: ArchiveManifest;
  /** The archive's data, assembled and checked; the caller disposes it. */
  staging: StagingVolume;
  vmConfig?: Buffer;
}

const ManifestSchema = z.object({
  format: z.literal(ARCHIVE_FORMAT),
  createdAt: z.string(),
  record: z.looseObject({ id: z.string().regex(RECORD_ID), volumeId: z.string(), size: z.number(), createdAt: z.string() }),
  size: z.number().int().positive().multipleOf(512),
  chunks: z.array(z.object({ name: z.string(), offset: z.number().int().min(0), length: z.number().int().positive().max(ARCHIVE_CHUNK), sha256: z.string().regex(/^[0-9a-f]{64}$/) })),
  vmConfig: z.boolean(),
});

const refuse = (message: string) => new CairnError('INVALID_INPUT', message, { driver: 'archive' });
const corrupt = (message: string, cause?: unknown) => new CairnError('CORRUPT', message, { driver: 'archive', cause });

/** `INVALID_INPUT` for a name that is absolute, has `.`/`..`/empty segments, a backslash or NUL. */
function assertSafeName(name: string): void {
  const segments = name.split('/');
  if (name.startsWith('/') || name.includes('\\') || name.includes('\0') || segments.some((s) => s === '' || s === '.' || s === '..')) {
    throw refuse(`entry "${name}" escapes the archive`);
  }
}

/**
 * Reads and checks an archive written by `writeArchive`, assembling its data in a private
 * staging volume; nothing else is written. Refuses with `INVALID_INPUT` an entry that escapes
 * the archive (absolute path, `..`), a duplicated name, a link or other non-file entry, an
 * unexpected entry or order, or a file that is not a Cairn archive (not a tar at all, another
 * format version, a manifest it does not take); with `CORRUPT` a wrong entry size, a checksum
 * mismatch, a missing entry or a truncated tar; a file that cannot be read as the code its system
 * error maps to (toCairnError: EIO `UNAVAILABLE`; a missing file `NOT_FOUND`). A manifest it does not take is refused with
 * `INVALID_INPUT` only when SHA256SUMS vouches for it (an intact archive, written so), else
 * `CORRUPT` (a damaged manifest): the archive is read to its end to tell. Progress (phase `read`):
 * the data entries' bytes checked into staging, of the manifest's total. `CANCELLED` once `signal` is
 * aborted (checked before each entry). On any refusal the staging volume is removed before the
 * error is thrown. The staging volume goes in `options.stagingDir` (StagingVolume.create's
 * `parent`, made when missing if `options.makeStagingDir`; default: the system temporary directory).
 */
export async function readArchive(file: string, options: { progress?: ArchiveProgress; signal?: AbortSignal; stagingDir?: string; makeStagingDir?: boolean } = {}): Promise<ReadArchive> {
  const extract = tar.extract();
  const input = createReadStream(file);
  input.on('error', (err) => extract.destroy(err));
  input.pipe(extract);
  let manifest: ArchiveManifest | undefined;
  let staging: StagingVolume | undefined;
  let rw: Attachment | undefined;
  let vmConfig: Buffer | undefined;
  let sumsSeen = false;
  const seen = new Set<string>();
  const digests = new Map<string, string>();
  const expected = new Map<string, ArchiveManifest['chunks'][number]>();
  let dataDone = 0;
  let dataTotal = 0;
  /** The manifest's refusal, held until SHA256SUMS says whether the manifest is intact. */
  let refusal: CairnError | undefined;
  try {
    for await (const entry of extract) {
      throwIfAborted(options.signal, 'archive');
      const { name, size = 0, type } = entry.header;
      if (refusal) {
        if (name !== SUMS_NAME) {
          for await (const _ of entry as unknown as AsyncIterable<Buffer>);
          continue;
        }
        const body = await readEntry(entry as unknown as AsyncIterable<Buffer>, size, MAX_METADATA_BYTES);
        const vouched = body.toString('utf8').split('\n').includes(`${digests.get(MANIFEST_NAME)}  ${MANIFEST_NAME}`);
        throw vouched ? refusal : corrupt(`${MANIFEST_NAME} does not match ${SUMS_NAME}: the archive is damaged`, refusal);
      }
      assertSafeName(name);
      if (type !== 'file' && type !== 'contiguous-file') throw refuse(`entry "${name}" is a ${type}, not a file`);
      if (seen.has(name)) throw refuse(`entry "${name}" appears twice`);
      seen.add(name);
      if (sumsSeen) throw refuse(`entry "${name}" follows ${SUMS_NAME}`);
      if (!manifest) {
        if (name !== MANIFEST_NAME) throw refuse(`${file} is not a Cairn backup archive (first entry is "${name}", not ${MANIFEST_NAME})`);
        const body = await readEntry(entry as unknown as AsyncIterable<Buffer>, size, MAX_METADATA_BYTES);
        digests.set(name, sha256(body));
        try {
          manifest = parseManifest(body);
        } catch (err) {
          if (!isCairnError(err) || err.code !== 'INVALID_INPUT' || otherVersion(body)) throw err;
          refusal = err;
          continue;
        }
        for (const c of manifest.chunks) expected.set(c.name, c);
        dataTotal = manifest.chunks.reduce((n, c) => n + c.length, 0);
        options.progress?.(0, dataTotal, 'read');
        staging = await StagingVolume.create(manifest.size, options.stagingDir, { makeParent: options.makeStagingDir });
        rw = await staging.attach('rw');
        continue;
      }
      if (name === SUMS_NAME) {
        const body = await readEntry(entry as unknown as AsyncIterable<Buffer>, size, MAX_METADATA_BYTES);
        checkSums(body.toString('utf8'), digests);
        sumsSeen = true;
        continue;
      }
      if (name === VM_CONFIG_NAME && manifest.vmConfig) {
        vmConfig = await readEntry(entry as unknown as AsyncIterable<Buffer>, size, MAX_METADATA_BYTES);
        digests.set(name, sha256(vmConfig));
        continue;
      }
      const chunk = expected.get(name);
      if (!chunk) throw refuse(`unexpected entry "${name}"`);
      if (size !== chunk.length) throw corrupt(`entry ${name} is ${size} bytes; the manifest says ${chunk.length}`);
      const data = await readEntry(entry as unknown as AsyncIterable<Buffer>, size, ARCHIVE_CHUNK);
      const digest = sha256(data);
      if (digest !== chunk.sha256) throw corrupt(`entry ${name} fails its checksum`);
      digests.set(name, digest);
      await rw!.device.write(chunk.offset, data);
      dataDone += data.length;
      options.progress?.(dataDone, dataTotal, 'read');
    }
    if (refusal) throw corrupt(`archive is incomplete: ${SUMS_NAME} missing, and ${MANIFEST_NAME} is not one this version takes`, refusal);
    if (!manifest) throw refuse(`${file} is not a Cairn backup archive (it is empty)`);
    const missing = [...expected.keys(), ...(manifest.vmConfig ? [VM_CONFIG_NAME] : []), SUMS_NAME].filter((n) => !seen.has(n));
    if (missing.length > 0) throw corrupt(`archive is incomplete: ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ` and ${missing.length - 3} more` : ''} missing`);
    await rw!.device.flush();
    await staging!.driver.detach(rw!.id);
    return { manifest, staging: staging!, vmConfig };
  } catch (err) {
    extract.destroy();
    input.destroy();
    if (rw) await staging!.driver.detach(rw.id).catch(() => undefined); // else its file stays open
    await staging?.dispose();
    if (isCairnError(err)) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new CairnError('NOT_FOUND', `archive ${file} does not exist`, { driver: 'archive', cause: err });
    // The file could not be read (EIO, EACCES…): what its code maps to, never a verdict on its content.
    if (isSystemError(err)) throw toCairnError(err, 'archive', `reading archive ${file}`);
    if (seen.size === 0 && !(await startsLikeTar(file))) throw refuse(`${file} is not a Cairn backup archive (not a tar archive: ${e.message})`);
    throw corrupt(`${file} is not a readable tar archive: ${e.message}`, err);
  }
}

/**
 * Whether the file starts as a tar does: its first header block carries the POSIX tar magic
 * (`ustar` at 257), or the file (however short) starts as every Cairn archive's first header does,
 * with the manifest's name and its NUL. A damaged or truncated tar (cut inside its first header
 * too) does; another kind of file does not.
 */
async function startsLikeTar(file: string): Promise<boolean> {
  const fh = await open(file, 'r').catch(() => undefined);
  if (!fh) return false;
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await fh.read(head, 0, 512, 0);
    if (bytesRead >= 262 && head.toString('latin1', 257, 262) === 'ustar') return true;
    const n = Math.min(bytesRead, FIRST_NAME.length);
    return n > 0 && head.subarray(0, n).equals(FIRST_NAME.subarray(0, n));
  } finally {
    await fh.close();
  }
}

/** How every archive's first header starts: the manifest's name, NUL-terminated (format.ts). */
const FIRST_NAME = Buffer.from(`${MANIFEST_NAME}\0`, 'latin1');

/** A manifest of another version of the format (`cairn-archive/<n>`): refused as such, whatever its sums say. */
function otherVersion(body: Buffer): boolean {
  try {
    const format = (JSON.parse(body.toString('utf8')) as { format?: unknown } | null)?.format;
    return typeof format === 'string' && format !== ARCHIVE_FORMAT && /^cairn-archive\/\d+$/.test(format);
  } catch {
    return false;
  }
}

/** An entry's body: `INVALID_INPUT` when its header says more than `max` bytes, `CORRUPT` when the body is not the size its header says. */
export async function readEntry(entry: AsyncIterable<Buffer>, size: number, max: number): Promise<Buffer> {
  if (size > max) throw refuse(`an entry of ${size} bytes is larger than the ${max} bytes allowed`);
  const parts: Buffer[] = [];
  let n = 0;
  for await (const part of entry) {
    n += part.length;
    if (n > size) throw corrupt('an entry holds more bytes than its header says');
    parts.push(part);
  }
  if (n !== size) throw corrupt(`an entry holds ${n} bytes; its header says ${size}`);
  return Buffer.concat(parts, n);
}

function parseManifest(body: Buffer): ArchiveManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch (cause) {
    throw corrupt(`${MANIFEST_NAME} is not valid JSON`, cause);
  }
  const parsed = ManifestSchema.safeParse(raw);
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw refuse(`${MANIFEST_NAME}: ${i.path.join('.') || '(top level)'}: ${i.message}`);
  }
  const m = parsed.data as unknown as ArchiveManifest;
  let end = 0;
  for (const c of m.chunks) {
    if (c.name !== chunkName(c.offset)) throw refuse(`${MANIFEST_NAME}: chunk ${c.name} does not match its offset ${c.offset}`);
    if (c.offset < end) throw refuse(`${MANIFEST_NAME}: chunk ${c.name} overlaps the one before`);
    if (c.offset + c.length > m.size) throw refuse(`${MANIFEST_NAME}: chunk ${c.name} ends past the backup's size ${m.size}`);
    end = c.offset + c.length;
  }
  if (m.record.size !== m.size) throw refuse(`${MANIFEST_NAME}: record size ${m.record.size} differs from archive size ${m.size}`);
  return m;
}

/** Every entry read so far must be listed with its digest, and nothing else. */
function checkSums(text: string, digests: Map<string, string>): void {
  const listed = new Map<string, string>();
  for (const line of text.split('\n').filter(Boolean)) {
    const m = /^([0-9a-f]{64}) {2}(.+)$/.exec(line);
    if (!m) throw corrupt(`${SUMS_NAME} has a malformed line`);
    listed.set(m[2]!, m[1]!);
  }
  for (const [name, digest] of digests) {
    const want = listed.get(name);
    if (!want) throw corrupt(`${SUMS_NAME} does not list ${name}`);
    if (want !== digest) throw corrupt(`entry ${name} does not match ${SUMS_NAME}`);
  }
  for (const name of listed.keys()) if (!digests.has(name)) throw corrupt(`${SUMS_NAME} lists ${name}, which is not in the archive before it`);
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
