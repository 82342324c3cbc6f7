/**
 * Page-aligned buffers and O_DIRECT writes from them.
 *
 * Why: on this kind of VM, a buffered write of freshly allocated page-cache pages costs 0.2–2.5 s
 * of kernel time per GiB (the guest faults host pages back in), and the data must be written
 * back again by fsync. An O_DIRECT write from an aligned buffer goes to the device once, with
 * about 0.1 s of kernel time per GiB. Cinder copies volumes with `oflag=direct` for the same
 * reason.
 *
 * Node's own Buffers are malloc'd (16-byte aligned), so aligned memory comes from a
 * WebAssembly.Memory, whose backing store the engine maps page-aligned. Buffers made here are
 * remembered (by their ArrayBuffer), so a writer can tell cheaply whether a Buffer it is handed
 * may go to an O_DIRECT descriptor. Anything else takes the buffered path: direct I/O is an
 * optimisation, never a requirement.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { CairnError, throwIfAborted } from '../errors.js';
import type { PositionalWriter } from './write-fully.js';

/** Alignment of buffers, offsets and lengths for O_DIRECT here (the page size; covers 512-byte devices). */
export const DIRECT_IO_ALIGN = 4096;
const WASM_PAGE = 64 * 1024;

const aligned = new WeakSet<object>();

/** The part of the WebAssembly API used here (the project's lib settings do not declare it). */
interface WasmMemoryApi {
  Memory: new (d: { initial: number; maximum: number; shared: boolean }) => { buffer: ArrayBuffer | SharedArrayBuffer };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmMemoryApi }).WebAssembly;

/**
 * A zero-filled Buffer of `size` bytes whose first byte is page-aligned. `shared`: backed by a
 * SharedArrayBuffer, so worker threads see the same bytes without a transfer.
 */
export function alignedBuffer(size: number, options: { shared?: boolean } = {}): Buffer {
  const pages = Math.max(1, Math.ceil(size / WASM_PAGE));
  const memory = new wasm.Memory({ initial: pages, maximum: pages, shared: options.shared ?? false });
  const backing = memory.buffer;
  aligned.add(backing);
  return Buffer.from(backing, 0, size);
}

/**
 * True when `data` may be written with O_DIRECT at `position`: it lives in a buffer from
 * alignedBuffer at an aligned offset, and `position` is aligned. (The length need not be: see
 * writeDirect for the tail.)
 */
export function isDirectIoReady(data: Uint8Array, position: number): boolean {
  return aligned.has(data.buffer) && data.byteOffset % DIRECT_IO_ALIGN === 0 && position % DIRECT_IO_ALIGN === 0;
}

/**
 * Opens `path` for O_DIRECT writes with `flags` (plus O_DIRECT), or returns undefined where the
 * file system refuses O_DIRECT (tmpfs, some FUSE mounts: EINVAL) or the platform has no O_DIRECT.
 * Other errors are thrown as they are.
 */
export async function openDirect(path: string, flags: number, mode = 0o666): Promise<FileHandle | undefined> {
  const direct = (constants as Record<string, number>).O_DIRECT;
  if (!direct) return undefined;
  try {
    return await open(path, flags | direct, mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EINVAL') return undefined;
    throw err;
  }
}

/**
 * For an O_DIRECT read of `length` bytes at file `offset` into `into`: the span to read instead,
 * from `offset` rounded down to the end rounded up to DIRECT_IO_ALIGN, as a view of the memory
 * around `into` (so the wanted bytes land exactly in `into`). Undefined unless `into` lies in a
 * buffer from alignedBuffer at `offset`'s alignment, with room in that buffer for the rounding on
 * both sides; a caller that lays `into` out so hands that room over (ObjectStore.getInto's `once`).
 */
export function directReadSpan(into: Uint8Array, offset: number, length: number): Buffer | undefined {
  if (!aligned.has(into.buffer)) return undefined;
  const before = offset % DIRECT_IO_ALIGN;
  const start = into.byteOffset - before;
  if (start < 0 || start % DIRECT_IO_ALIGN !== 0) return undefined;
  const span = Math.ceil((before + length) / DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN;
  if (start + span > into.buffer.byteLength) return undefined;
  return Buffer.from(into.buffer, start, span);
}

/** Largest single O_DIRECT write(2). */
const DIRECT_WRITE_MAX = 16 * 1024 * 1024;

/** Aligned blocks for padded tails, reused (one per tail write in flight). */
const tails: Buffer[] = [];

/**
 * Writes `data` (isDirectIoReady at `position`) through an O_DIRECT descriptor. Whole aligned
 * blocks go straight from `data`; a partial last block is written padded with zeros — so when
 * `data` ends the file, the caller truncates the file to its real length afterwards. Loops over
 * short writes of whole blocks. A write that takes nothing, or a number of bytes that is not a
 * whole number of blocks (the next O_DIRECT write could not start where it stopped), fails
 * `UNAVAILABLE`, its details naming the file `offset` and `length` of the data not known written;
 * what was written before stays written. Once `signal` aborts, no further write(2) starts
 * (`CANCELLED`); one in the kernel finishes first. `fh`: an O_DIRECT FileHandle (openDirect), or
 * anything with its positional write.
 */
export async function writeDirect(fh: PositionalWriter, data: Uint8Array, position: number, signal?: AbortSignal): Promise<void> {
  const whole = data.length - (data.length % DIRECT_IO_ALIGN);
  let done = 0;
  while (done < whole) {
    throwIfAborted(signal);
    const asked = Math.min(DIRECT_WRITE_MAX, whole - done);
    const { bytesWritten } = await fh.write(data, done, asked, position + done);
    if (!(bytesWritten > 0) || bytesWritten % DIRECT_IO_ALIGN !== 0) throw shortWrite(position + done, data.length - done, asked, bytesWritten);
    done += bytesWritten;
  }
  const tail = data.length - whole;
  if (tail === 0) return;
  throwIfAborted(signal);
  const block = tails.pop() ?? alignedBuffer(DIRECT_IO_ALIGN);
  try {
    block.fill(0);
    block.set(data.subarray(whole));
    const { bytesWritten } = await fh.write(block, 0, DIRECT_IO_ALIGN, position + whole);
    if (bytesWritten !== DIRECT_IO_ALIGN) throw shortWrite(position + whole, tail, DIRECT_IO_ALIGN, bytesWritten);
  } finally {
    if (tails.length < 8) tails.push(block);
  }
}

/** writeDirect's error for a write(2) of `asked` bytes that took `bytesWritten`, leaving `length` bytes at `offset` not known written. */
function shortWrite(offset: number, length: number, asked: number, bytesWritten: number): CairnError {
  return new CairnError('UNAVAILABLE', `writing ${length} bytes at offset ${offset} with O_DIRECT: a write of ${asked} bytes took ${bytesWritten} (O_DIRECT goes on only after at least one whole ${DIRECT_IO_ALIGN}-byte block, and only whole blocks)`, {
    details: { offset, length },
  });
}

/**
 * Copies into or out of shared memory run at full speed only between addresses equal mod this
 * (V8 copies shared memory with relaxed atomics, a byte at a time otherwise: measured 4 GB/s
 * against 27 GB/s aligned).
 */
export const COPY_ALIGN = 8;

/** The bytes (0 to COPY_ALIGN - 1) to add to `at` so that it is equal to `like` mod COPY_ALIGN. */
export function alignPad(at: number, like: number): number {
  return (((like - at) % COPY_ALIGN) + COPY_ALIGN) % COPY_ALIGN;
}
