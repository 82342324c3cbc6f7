import { untilAborted, type BackupReader, type Extent } from '@cairn/core';
import type { NbdBackend, ReadRun, StatusDescriptor } from '../nbd-backend.js';
import { BASE_ALLOCATION, STATE_HOLE, STATE_ZERO } from '../protocol.js';
import type { OverlayFile } from './overlay-file.js';
import { WindowReader, type WindowReaderOptions } from './window-reader.js';

/** Options of `backupBackend`: its read-ahead windows, and what may stop it. */
export interface BackupBackendOptions extends WindowReaderOptions {
  /**
   * Called first by every read, block-status query, write and write-zeroes (not flush, which
   * only makes the overlay durable); what it throws fails the request (`UNAVAILABLE` → EIO).
   * Called once per request: it must be O(1). Default none.
   */
  assertServing?: () => void;
}

/**
 * An NbdBackend over one backup, read chunk by chunk from the repository through `reader`.
 * All-zero chunks are sent as holes and reported by `base:allocation` as hole|zero, so clients
 * copy sparsely. A read touching a damaged or missing chunk fails with the reader's `CORRUPT` /
 * `NOT_FOUND`, which the server answers with EIO; other ranges stay readable.
 *
 * Sequential reads (per connection: the call's signal names it) go through a WindowReader
 * (`options`: large read-ahead windows, replies copied out of them); random reads straight to the
 * reader. A call whose signal is aborted (its client gone)
 * rejects with `CANCELLED` at once and holds no buffer of its own; the chunk fetches and windows
 * it shares with other clients go on.
 *
 * Without `overlay` the export is read-only. With it, writes, write-zeroes and flush go to the
 * overlay, and reads take overlay blocks where written, else the backup (reported as data).
 * Write-zeroes that may trim only mark whole blocks the overlay's data file still has as a hole
 * (OverlayFile.writeZeroes); with NBD_CMD_FLAG_NO_HOLE zeros are written.
 */
export function backupBackend(reader: BackupReader, overlay?: OverlayFile, options: BackupBackendOptions = {}): NbdBackend {
  const sequential = new WindowReader(reader, options);
  const assertServing = options.assertServing ?? ((): void => undefined);
  const backend: NbdBackend = {
    size: reader.size,
    readOnly: overlay === undefined,
    async read(offset, length, call) {
      assertServing();
      const signal = call?.signal;
      const runs: ReadRun[] = [];
      await walk(overlay, offset, length, async (from, len, inOverlay) => {
        if (inOverlay) runs.push(await overlay!.read(from, len));
        else runs.push(...(await baseRuns(reader, sequential, from, len, signal)));
      });
      return runs;
    },
    async blockStatus(context, offset, length, call) {
      assertServing();
      if (context !== BASE_ALLOCATION) return undefined;
      const out: StatusDescriptor[] = [];
      await walk(overlay, offset, length, async (from, len, inOverlay) => {
        if (inOverlay) push(out, len, 0);
        else for (const d of baseStatus(await untilAborted(reader.allocated({ offset: from, length: len }, { signal: call?.signal }), call?.signal, 'backup-export'), from, len)) push(out, d.length, d.flags);
      });
      return out;
    },
  };
  if (overlay) {
    backend.write = async (offset, data, { fua }) => {
      assertServing();
      await overlay.write(offset, data, fua);
    };
    backend.writeZeroes = async (offset, length, { fua, mayTrim }) => {
      assertServing();
      await overlay.writeZeroes(offset, length, fua, mayTrim);
    };
    backend.flush = () => overlay.flush();
  }
  return backend;
}

/** Calls `visit` for consecutive pieces of the range, in order, saying whether each is in the overlay. */
async function walk(overlay: OverlayFile | undefined, offset: number, length: number, visit: (from: number, len: number, inOverlay: boolean) => Promise<void>): Promise<void> {
  let at = offset;
  for (const w of overlay ? overlay.written(offset, length) : []) {
    if (w.offset > at) await visit(at, w.offset - at, false);
    await visit(w.offset, w.length, true);
    at = w.offset + w.length;
  }
  if (at < offset + length) await visit(at, offset + length - at, false);
}

/**
 * The backup's bytes as runs: zero chunks as `{ zero }`, data as views of one read (a buffer of
 * the read's length: never part of a larger window).
 * `CANCELLED` at once when `signal` is aborted.
 */
async function baseRuns(reader: BackupReader, windows: WindowReader, offset: number, length: number, signal: AbortSignal | undefined): Promise<ReadRun[]> {
  const data = await untilAborted(reader.allocated({ offset, length }, { signal }), signal, 'backup-export');
  if (data.length === 0) return [{ zero: length }];
  const bytes = await windows.read(offset, length, signal);
  const runs: ReadRun[] = [];
  let at = offset;
  for (const e of data) {
    if (e.offset > at) runs.push({ zero: e.offset - at });
    runs.push(bytes.subarray(e.offset - offset, e.offset - offset + e.length));
    at = e.offset + e.length;
  }
  if (at < offset + length) runs.push({ zero: offset + length - at });
  return runs;
}

/** `base:allocation` descriptors of the backup: data 0, zero chunks hole|zero. */
function baseStatus(data: Extent[], offset: number, length: number): StatusDescriptor[] {
  const out: StatusDescriptor[] = [];
  let at = offset;
  for (const e of data) {
    if (e.offset > at) out.push({ length: e.offset - at, flags: STATE_HOLE | STATE_ZERO });
    out.push({ length: e.length, flags: 0 });
    at = e.offset + e.length;
  }
  if (at < offset + length) out.push({ length: offset + length - at, flags: STATE_HOLE | STATE_ZERO });
  return out;
}

/** Appends a descriptor, merging it into the previous one when the flags are equal. */
function push(out: StatusDescriptor[], length: number, flags: number): void {
  const prev = out[out.length - 1];
  if (prev && prev.flags === flags) prev.length += length;
  else out.push({ length, flags });
}
