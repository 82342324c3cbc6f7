import { BackupReader, CairnError, type Repository } from '@cairn/core';
import type { NbdAddress } from '../connection.js';
import { NbdServer } from '../nbd-server.js';
import { resolveServerLimits, type NbdServerLimits } from '../server-limits.js';
import { backupBackend } from './backup-backend.js';
import { OverlayFile } from './overlay-file.js';

const DRIVER = 'backup-export';
const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/**
 * Options of `serveBackup`. The server's budgets and timeouts (`maxInFlightPerConnection` 32,
 * `maxWriteBytesPerConnection` 64 MiB, `maxReadBytesPerConnection` 64 MiB, `maxConnections` 16,
 * `handshakeTimeoutMs` 30000, `idleTimeoutMs` 600000) pass through to the NbdServer unchanged; see
 * `NbdServerLimits`.
 */
export interface ServeBackupOptions extends NbdServerLimits {
  /**
   * Where to listen: a unix socket path (must not exist yet), or a loopback TCP address (port 0
   * picks a free one; host default 127.0.0.1). Other hosts are `INVALID_INPUT`: NBD here has no
   * authentication or TLS.
   */
  listen: { path: string } | { host?: string; port: number };
  /** Export name clients ask for. Default: the backup id. */
  exportName?: string;
  /**
   * Path of a copy-on-write overlay file (created with `<path>.map` when absent, reopened when
   * present). Writes through the export go there; the repository is never written. Default none:
   * the export is read-only.
   */
  writableOverlay?: string;
  /** Block size of a new overlay. Default 64 KiB. */
  overlayBlockSize?: number;
  /**
   * Read-ahead unit in chunks: sequential reads are served from windows of this many chunks,
   * fetched in one batch, two windows ahead, six kept. Default 32 (4 MiB at 128 KiB chunks).
   */
  readAhead?: number;
  /** Decoded chunks kept by the BackupReader (LRU), shared by all clients. Default 5 × `readAhead`. */
  cacheChunks?: number;
  /**
   * Hold a `shared` repository lock while serving, so `gc` cannot remove chunks in use. Default
   * true. Should the lock lapse (its refreshes failed until it expired, so a GC elsewhere may
   * have run), the export stops serving: see `BackupExport.failure`.
   */
  lock?: boolean;
  /**
   * Problems of the server itself once it listens (out of file descriptors, a failed accept), and
   * the export stopping on its own (`BackupExport.failure`), as `UNAVAILABLE`; see
   * `NbdServerOptions.onError`. Default: ignored.
   */
  onError?: (err: CairnError) => void;
  /**
   * Ends the opening's waits on the repository (its lock, the manifest, the chunk index): aborted
   * during them, serveBackup rejects with `CANCELLED` at once, whatever the store does, leaving
   * nothing running or locked. Not looked at once the export listens: `close()` stops it.
   */
  signal?: AbortSignal;
}

/** A backup being served; `close()` stops it. */
export interface BackupExport {
  readonly backupId: string;
  readonly exportName: string;
  /** Export size in bytes (the backup's volume size). */
  readonly size: number;
  readonly readOnly: boolean;
  /** The bound address. */
  readonly address: NbdAddress;
  /** NBD URI for clients: `nbd+unix:///<name>?socket=<path>` or `nbd://127.0.0.1:<port>/<name>`. */
  readonly uri: string;
  /** Connected clients. */
  readonly connectionCount: number;
  /**
   * Why the export stopped serving on its own, or undefined while it serves (or was closed by
   * `close()`): `UNAVAILABLE` with the lapse of its repository lock as `cause` (`BUSY`). From the
   * moment the lapse is seen (by the first request after it, or by a check every sixth of the
   * lock's lifetime, at most 5 s apart) every request gets EIO with this message, then the export
   * closes itself as `close()` does: requests in flight answer, clients are disconnected, the
   * overlay is flushed and closed, the lock is released. Its data was never wrong (every chunk is
   * checked against its id), but once GC may have run, reads may fail at any point: an export that
   * cannot keep its promise says so at once instead of failing here and there.
   */
  readonly failure: CairnError | undefined;
  /**
   * Stops accepting, lets requests in flight answer (connections still busy after
   * `drainTimeoutMs`, default 10000, are cut), then flushes and closes the overlay and releases
   * the repository lock. Idempotent.
   */
  close(options?: { drainTimeoutMs?: number }): Promise<void>;
}

/**
 * Serves backup `backupId` of `service.repository` (a ChunkedBackupService or anything holding a
 * Repository) as an NBD export, reading chunks on demand: instant restore, boot from backup and
 * file-level access without restoring first. Many clients at once.
 * Errors: `NOT_FOUND`/`CORRUPT` for a missing or damaged manifest, `INVALID_INPUT` for a
 * non-loopback host or bad options (checked before anything is locked or opened), `CONFLICT` when the socket/port is in use or the overlay
 * belongs to another backup, `BUSY` when the repository is locked exclusively (gc),
 * `UNAVAILABLE` when its lock lapsed before it listened (see `BackupExport.failure`).
 * Nothing is left running or locked when it fails.
 */
export async function serveBackup(service: { readonly repository: Repository }, backupId: string, options: ServeBackupOptions): Promise<BackupExport> {
  const listen = options.listen;
  if (!('path' in listen)) {
    const host = listen.host ?? '127.0.0.1';
    if (!LOOPBACK.has(host)) throw new CairnError('INVALID_INPUT', `refusing to serve a backup on ${host}: only unix sockets and loopback addresses`, { driver: DRIVER });
    if (!Number.isInteger(listen.port) || listen.port < 0 || listen.port > 65535) throw new CairnError('INVALID_INPUT', `bad port ${listen.port}`, { driver: DRIVER });
  }
  const repo = service.repository;
  const readAhead = options.readAhead ?? 32;
  if (!Number.isInteger(readAhead) || readAhead < 1) throw new CairnError('INVALID_INPUT', `readAhead must be a positive number of chunks, not ${readAhead}`, { driver: DRIVER });
  const limits = resolveServerLimits(options, DRIVER);
  const cleanups: Array<() => Promise<void>> = [];
  let failure: CairnError | undefined;
  let served: BackupExport | undefined;
  /** Stops the export for good (see `BackupExport.failure`); once. */
  const stopServing = (lapse: unknown): void => {
    if (failure) return;
    const cause = lapse instanceof CairnError ? lapse : undefined;
    failure = new CairnError('UNAVAILABLE', `stopped serving backup ${backupId}: ${cause?.message ?? String(lapse)}`, { driver: DRIVER, cause: lapse, details: cause?.details });
    if (!served) return; // still opening: serveBackup fails with it
    try {
      options.onError?.(failure);
    } finally {
      void served.close().catch(() => undefined);
    }
  };
  const cleanup = async (): Promise<void> => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  };
  try {
    // The lock comes first: the reader loads the index, which must not change under it (a GC
    // that finished between the two would leave it naming packs that are gone).
    let assertServing: (() => void) | undefined;
    if (options.lock ?? true) {
      const lock = await repo.locks.acquire('shared', { purpose: `serve backup ${backupId} over NBD`, signal: options.signal });
      cleanups.push(() => lock.release());
      // O(1) per request: a flag and a clock read (LockHandle.assertHeld).
      assertServing = () => {
        if (failure) throw failure;
        try {
          lock.assertHeld();
        } catch (lapse) {
          stopServing(lapse);
          throw failure;
        }
      };
      const check = assertServing;
      const ttl = Date.parse(lock.doc.expiresAt) - Date.parse(lock.doc.createdAt);
      const watch = setInterval(() => {
        try {
          check();
        } catch {
          // stopServing reported it
        }
      }, Math.min(5000, Math.max(10, ttl / 6)));
      watch.unref();
      cleanups.push(async () => clearInterval(watch));
    }
    const reader = await BackupReader.open(repo, backupId, { cacheChunks: options.cacheChunks ?? 5 * readAhead, readAhead, signal: options.signal });
    let overlay: OverlayFile | undefined;
    if (options.writableOverlay !== undefined) {
      overlay = await OverlayFile.open(options.writableOverlay, { backupId, size: reader.size }, (o, l) => reader.read(o, l), { blockSize: options.overlayBlockSize });
      cleanups.push(() => overlay!.close());
    }
    const exportName = options.exportName ?? backupId;
    const server = new NbdServer({
      exports: [{ name: exportName, backend: backupBackend(reader, overlay, { windowChunks: readAhead, assertServing }), description: `Cairn backup ${backupId}${overlay ? ' (writable overlay)' : ''}` }],
      ...limits,
      onError: options.onError,
      driver: DRIVER,
    });
    cleanups.push(() => server.close());
    const address = await server.listen(listen);
    let closing: Promise<void> | undefined;
    served = {
      backupId,
      exportName,
      size: reader.size,
      readOnly: overlay === undefined,
      address,
      uri: nbdUri(address, exportName),
      get connectionCount() {
        return server.connectionCount;
      },
      get failure() {
        return failure;
      },
      close(closeOptions = {}) {
        closing ??= (async () => {
          await server.close(closeOptions);
          await cleanup();
        })();
        return closing;
      },
    };
    if (failure) throw failure; // the lock lapsed while the export was being set up
    return served;
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** The NBD URI (as nbdinfo, nbdcopy, qemu and guestfish take it) of `exportName` at `address`. */
export function nbdUri(address: NbdAddress, exportName: string): string {
  const name = encodeURIComponent(exportName);
  if ('path' in address) return `nbd+unix:///${name}?socket=${encodeURIComponent(address.path).replaceAll('%2F', '/')}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}/${name}`;
}
