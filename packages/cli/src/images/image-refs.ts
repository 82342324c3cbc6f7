import { lstat, open, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CairnError, quotedCut } from '@cairn/core';
import type { ImageFormat } from './image-format.js';

/**
 * Disk images may name other files, which qemu opens as it opens the image: a qcow2 backing
 * file or external data file, a VMDK's parent (`parentFileNameHint`) or the extents of a VMDK
 * descriptor. Such names can point anywhere (`/etc/shadow`, `/dev/sda`, `nbd://…`, `json:{…}`),
 * so an image from elsewhere could make an import copy a file the user never named into a volume.
 *
 * `assertSelfContained` reads the image's header itself, before qemu-img sees it, and refuses
 * (`INVALID_INPUT`, `details.reason` `backing-file`, `data-file` or `extent`) every image that
 * names another file, except a VMDK descriptor's extents that are plain file names beside the
 * descriptor (regular files, not symbolic links): the usual two-file VMDK (`disk.vmdk`,
 * `disk-flat.vmdk`). The checks are a superset of what qemu 7 follows; qemu-img is also told to
 * open no backing file (image-format.ts), so a check missed here still reads no backing file.
 * VMDK data whose damage cannot be checked (inspectImage) is refused with `NOT_SUPPORTED`
 * (`details.kind`): a COWD sparse file (the image itself or a SPARSE/VMFSSPARSE extent) and a
 * SESPARSE extent.
 */
export async function assertSelfContained(file: string, format: Exclude<ImageFormat, 'raw'>, hint: string): Promise<void> {
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const read = async (at: number, length: number): Promise<Buffer> => {
      const buf = Buffer.alloc(Math.max(0, Math.min(length, size - at)));
      let done = 0;
      while (done < buf.length) {
        const { bytesRead } = await fh.read(buf, done, buf.length - done, at + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buf.subarray(0, done);
    };
    if (format === 'qcow2') await checkQcow2(file, read, hint);
    else await checkVmdk(file, read, hint);
  } finally {
    await fh.close();
  }
}

type Read = (at: number, length: number) => Promise<Buffer>;

const refused = (file: string, reason: 'backing-file' | 'data-file' | 'extent', what: string, hint: string): CairnError =>
  new CairnError(
    'INVALID_INPUT',
    `image ${file} ${what}; Cairn imports only self-contained images and never opens files an image names (flatten it first, e.g. qemu-img convert -O qcow2 <image> <flat.qcow2>, after checking what it points to)${hint}`,
    { details: { file, reason } },
  );

/** A name from an image for a message: printable, bounded (200 characters, quotedCut). */
const shown = (name: string): string => quotedCut(name, 200);

/** qcow2 header: backing_file_offset (u64 @8) and size (u32 @16); v3 incompatible_features (u64 @72), bit 2 external data file. */
async function checkQcow2(file: string, read: Read, hint: string): Promise<void> {
  const h = await read(0, 104);
  if (h.length < 20 || h.readUInt32BE(0) !== 0x514649fb) return; // not a qcow2 header: qemu-img refuses it
  const backingOffset = h.readBigUInt64BE(8);
  const backingSize = h.readUInt32BE(16);
  if (backingOffset !== 0n && backingSize !== 0) {
    const name = backingOffset < BigInt(Number.MAX_SAFE_INTEGER) ? (await read(Number(backingOffset), Math.min(backingSize, 1023))).toString('utf8') : '';
    throw refused(file, 'backing-file', `has a backing file ${shown(name)}`, hint);
  }
  const version = h.readUInt32BE(4);
  if (version >= 3 && h.length >= 80 && (h.readBigUInt64BE(72) & 4n) !== 0n) {
    throw refused(file, 'data-file', 'keeps its data in an external data file', hint);
  }
}

/** qemu reads a VMDK's parent from 10 KiB of descriptor at 0x200 (sparse) or 0 (descriptor file). */
const DESC_REGION = 0x200 + 20 * 512;
/** qemu reads at most this much of a descriptor file. */
const DESC_MAX = (1 << 20) - 1;

/** Extent types qemu opens as a sparse file (vmdk_open_sparse, KDMV or COWD by magic): SPARSE and VMFSSPARSE. */
const SPARSE_EXTENT = /^(SPARSE|VMFSSPARSE)$/;

/**
 * `NOT_SUPPORTED` naming the kind: VMDK data Cairn cannot check for being cut short (a truncated
 * file converts without an error, its missing grains read as zeros), so it imports none of it.
 * COWD (VMware's old VMFS sparse layout) and SESPARSE (ESXi's space-efficient sparse) cannot be
 * made by qemu-img here to test a check on; qemu opens SESPARSE read-only.
 */
const unchecked = (file: string, kind: 'COWD' | 'SESPARSE', where: string, hint: string): CairnError =>
  new CairnError(
    'NOT_SUPPORTED',
    `image ${file}${where} is a ${kind} VMDK ${kind === 'COWD' ? 'sparse file' : 'extent'}, which Cairn cannot check for damage; convert it first (e.g. qemu-img convert -O qcow2 <image> <copy.qcow2>) and import the copy${hint}`,
    { details: { file, kind } },
  );

/** The first 4 bytes of `path` as text ('' for a shorter file). */
async function magicOf(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(4);
    const { bytesRead } = await fh.read(buf, 0, 4, 0);
    return buf.subarray(0, bytesRead).toString('latin1');
  } finally {
    await fh.close();
  }
}

async function checkVmdk(file: string, read: Read, hint: string): Promise<void> {
  const magic = (await read(0, 4)).toString('latin1');
  if (magic === 'COWD') throw unchecked(file, 'COWD', '', hint);
  const sparse = magic === 'KDMV';
  const text = (await read(0, sparse ? DESC_REGION : DESC_MAX)).toString('latin1');
  const parent = /parentFileNameHint\s*=\s*"([^"]+)"/.exec(text);
  if (parent) throw refused(file, 'backing-file', `is a delta disk with a parent ${shown(parent[1]!)}`, hint);
  if (sparse) return; // a sparse VMDK is its own single extent
  for (const { name, fields } of extentLines(text)) {
    if (!name || name === '.' || name === '..' || /[/\\:]/.test(name) || name.length > 511) {
      throw refused(file, 'extent', `names an extent ${shown(name)} that is not a file beside it`, hint);
    }
    const path = join(dirname(file), name);
    const link = await lstat(path).catch(() => undefined);
    if (!link?.isFile()) {
      throw refused(file, 'extent', `names an extent ${shown(name)} that is ${link ? 'not a regular file (a symbolic link, a device…)' : 'missing'}`, hint);
    }
    // Sparse extents are checked against qemu-img map (vmdkSparseExtents), unless of a kind that cannot be.
    if (fields?.[2] === 'SESPARSE') throw unchecked(file, 'SESPARSE', ` (its extent ${shown(name)})`, hint);
    if (fields && SPARSE_EXTENT.test(fields[2]!) && (await magicOf(path)) === 'COWD') throw unchecked(file, 'COWD', ` (its extent ${shown(name)})`, hint);
    // A flat extent shorter than it claims would read as zeros: a truncated image.
    if (fields && /^(FLAT|VMFS)$/.test(fields[2]!)) {
      const need = (Number(fields[3] ?? 0) + Number(fields[1])) * 512;
      const have = (await stat(path)).size;
      if (have < need) {
        throw new CairnError('CORRUPT', `image ${file}: its extent ${shown(name)} holds ${have} bytes of the ${need} it should (truncated)`, { details: { file, extent: name } });
      }
    }
  }
}

/**
 * Extent lines of a VMDK descriptor as qemu reads them (`RW <sectors> <TYPE> "<file>" [offset]`),
 * in order: any line starting with RW and holding a quote counts, a superset of qemu's sscanf;
 * `fields` (sectors, type, offset) only when the line is well formed.
 */
function* extentLines(text: string): Generator<{ name: string; fields: RegExpExecArray | null }> {
  for (const line of text.split(/[\r\n]/)) {
    if (!/^\s*RW/.test(line) || !line.includes('"')) continue;
    yield { name: /"([^"]*)/.exec(line)![1]!, fields: /^\s*RW\s+(\d+)\s+(\S+?)\s*"[^"]*"\s*(\d+)?/.exec(line) };
  }
}

/**
 * The sparse extents (SPARSE, VMFSSPARSE) of the VMDK descriptor `file` (one that passed
 * assertSelfContained: its extents are files beside it, none COWD or SESPARSE), each with the
 * guest byte range it holds (extents follow each other in the order of their lines): what qemu
 * reads from each is checked against its size (inspectImage). Empty for a sparse VMDK (its own
 * single extent, magic `KDMV`).
 */
export async function vmdkSparseExtents(file: string): Promise<Array<{ path: string; start: number; end: number }>> {
  const fh = await open(file, 'r');
  let text: string;
  try {
    const buf = Buffer.alloc(Math.min(DESC_MAX, (await fh.stat()).size));
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    text = buf.subarray(0, bytesRead).toString('latin1');
  } finally {
    await fh.close();
  }
  if (text.startsWith('KDMV')) return [];
  const extents: Array<{ path: string; start: number; end: number }> = [];
  let start = 0;
  for (const { name, fields } of extentLines(text)) {
    if (!fields) break; // qemu refuses the descriptor (or the extent): nothing to map further
    const end = start + Number(fields[1]) * 512;
    if (SPARSE_EXTENT.test(fields[2]!)) extents.push({ path: join(dirname(file), name), start, end });
    start = end;
  }
  return extents;
}
