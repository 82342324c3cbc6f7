import type { BlockDevice } from '../contracts/block-device.js';
import type { RestoreOptions } from '../contracts/backup-service.js';
import { CairnError, isCairnError, throwIfAborted } from '../errors.js';
import { untilAborted } from '../util/until-aborted.js';
import { fetchChunks } from './chunk-fetcher.js';
import { chunkLength } from './chunk-plan.js';
import type { Manifest } from './format.js';
import type { Repository } from './repository.js';

/** Bytes written between background flushes of the target. */
const FLUSH_EVERY = 256 * 1024 * 1024;
/**
 * Bytes of the volume restored per window. A window's chunks are planned and fetched together,
 * so the restore's memory follows the window, not the volume; a chunk used in two windows is
 * fetched once per window.
 */
const WINDOW_BYTES = 1024 * 1024 * 1024;

/**
 * Sorts writes by offset and merges neighbours whose bytes are also neighbours in memory (chunks
 * decoded from one pack range in volume order), so a range becomes a few large writes. Pure.
 */
export function coalesceWrites(writes: { offset: number; data: Buffer }[]): { offset: number; data: Buffer }[] {
  const sorted = [...writes].sort((a, b) => a.offset - b.offset);
  const out: { offset: number; data: Buffer }[] = [];
  for (const w of sorted) {
    const last = out[out.length - 1];
    if (
      last &&
      last.offset + last.data.length === w.offset &&
      last.data.buffer === w.data.buffer &&
      last.data.byteOffset + last.data.length === w.data.byteOffset
    ) {
      last.data = Buffer.from(last.data.buffer, last.data.byteOffset, last.data.length + w.data.length);
    } else {
      out.push({ offset: w.offset, data: w.data });
    }
  }
  return out;
}

/**
 * Writes a backup to `target` in one pass, whatever its parent chain, a window of the volume
 * (`windowBytes`, default WINDOW_BYTES) at a time: each distinct chunk of a window is fetched once
 * (ranged gets, coalesced per pack), checked against its id, and written at every offset of the
 * window that holds it; zero runs become write-zeroes (or nothing on a zeroed target).
 * `INVALID_INPUT` for a small target; `NOT_FOUND`/`CORRUPT` naming the backup; never wrong bytes.
 *
 * Cancelled (`options.signal`), it rejects with `CANCELLED` at once, whatever the store and the
 * target do: it waits neither for the index load nor ranged gets, nor for target writes, zeroing
 * or flushes in flight (see fetchChunks for the memory they hold), and starts no write once the
 * signal is aborted; a write in flight may still land afterwards.
 */
export async function restoreBackup(repo: Repository, manifest: Manifest, target: BlockDevice, options: RestoreOptions = {}, windowBytes = WINDOW_BYTES): Promise<void> {
  const { size, chunkSize, backupId } = manifest;
  if (target.size < size) throw new CairnError('INVALID_INPUT', `target of ${target.size} bytes is smaller than backup ${backupId} (${size} bytes)`);
  const signal = options.signal;
  repo.processor(); // the worker threads boot while the index loads
  // The restore's signal ends the index load too (a store whose listing or reads of index/ hang).
  await repo.index.refresh({ signal });
  // A wait outside fetchChunks (a page load, zeroing, a flush) ends when the restore is cancelled
  // (util/until-aborted); the target writes inside fetchChunks are its to drop.
  let done = 0;
  // Flushing in the background every FLUSH_EVERY bytes overlaps writeback with decoding, instead of
  // leaving the whole restore to one long flush at the end.
  let sinceFlush = 0;
  let flushing: Promise<void> | undefined;
  let flushError: unknown;
  const advance = (n: number): void => {
    done += n;
    sinceFlush += n;
    options.progress?.(done, size);
    if (sinceFlush >= FLUSH_EVERY && !flushing) {
      sinceFlush = 0;
      flushing = target
        .flush()
        .catch((err) => void (flushError ??= err)) // raised after the copy
        .finally(() => (flushing = undefined));
    }
  };
  let zeroStart = -1;
  const flushZeros = async (end: number): Promise<void> => {
    if (zeroStart < 0) return;
    const length = Math.min(end, size) - zeroStart;
    throwIfAborted(signal);
    if (!options.targetIsZeroed) await untilAborted(target.writeZeroes(zeroStart, length), signal);
    advance(length);
    zeroStart = -1;
  };
  const perWindow = Math.max(1, Math.floor(windowBytes / chunkSize));
  try {
    for (let start = 0; start < manifest.chunks.length; start += perWindow) {
      // Chunk id → the offsets that hold it, in this window.
      const offsets = new Map<string, number[]>();
      const end = Math.min(start + perWindow, manifest.chunks.length);
      // The pages' reads take the signal the manifest was read with (Repository.readManifest);
      // one read without it, or shared, is abandoned here instead.
      const window = await untilAborted(manifest.chunks.window(start, end), signal);
      for (let i = start; i < end; i++) {
        const id = window.get(i);
        if (id === null) {
          if (zeroStart < 0) zeroStart = i * chunkSize;
          continue;
        }
        await flushZeros(i * chunkSize);
        const list = offsets.get(id);
        if (list) list.push(i * chunkSize);
        else offsets.set(id, [i * chunkSize]);
      }
      throwIfAborted(signal);
      await fetchChunks(
        repo,
        offsets.keys(),
        async (chunks) => {
          const placed: { offset: number; data: Buffer }[] = [];
          for (const { id, data } of chunks) {
            for (const offset of offsets.get(id)!) {
              const length = chunkLength(size, chunkSize, offset / chunkSize);
              if (data.length !== length) throw new CairnError('CORRUPT', `chunk ${id} has ${data.length} bytes where ${length} belong`);
              placed.push({ offset, data });
            }
          }
          for (const w of coalesceWrites(placed)) {
            throwIfAborted(signal); // a call left running by a cancel (fetchChunks) writes no more
            await target.write(w.offset, w.data);
            throwIfAborted(signal);
            advance(w.data.length);
          }
        },
        { signal, once: true },
      );
    }
    await flushZeros(size);
    throwIfAborted(signal);
    await untilAborted(flushing ?? Promise.resolve(), signal);
    if (flushError) throw flushError;
  } catch (err) {
    await untilAborted(flushing ?? Promise.resolve(), signal).catch(() => undefined);
    if (isCairnError(err) && (err.code === 'CORRUPT' || err.code === 'NOT_FOUND')) {
      throw new CairnError(err.code, `backup ${backupId} cannot be restored: ${err.message}`, { cause: err, details: { backupId, ...err.details } });
    }
    throw err;
  }
}
