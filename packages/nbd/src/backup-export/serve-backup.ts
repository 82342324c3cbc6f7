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
  /** Hold a `shared` repository lock while serving, so `gc` cannot remove chunks in use. Default true. */
  lock?: boolean;
  /**
   * Problems of the server itself once it listens (out of file descriptors, a failed accept), as
   * `UNAVAILABLE`; see `NbdServerOptions.onError`. Default: ignored.
   */
  onError?: (err: CairnError) => void;
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
 * belongs to another backup, `BUSY` when the repository is locked exclusively (gc).
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
  const cleanup = async (): Promise<void> => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  };
  try {
    // The lock comes first: the reader loads the index, which must not change under it (a GC
    // that finished between the two would leave it naming packs that are gone).
    if (options.lock ?? true) {
      const lock = await repo.locks.acquire('shared', { purpose: `serve backup ${backupId} over NBD` });
      cleanups.push(() => lock.release());
    }
    const reader = await BackupReader.open(repo, backupId, { cacheChunks: options.cacheChunks ?? 5 * readAhead, readAhead });
    let overlay: OverlayFile | undefined;
    if (options.writableOverlay !== undefined) {
      overlay = await OverlayFile.open(options.writableOverlay, { backupId, size: reader.size }, (o, l) => reader.read(o, l), { blockSize: options.overlayBlockSize });
      cleanups.push(() => overlay!.close());
    }
    const exportName = options.exportName ?? backupId;
    const server = new NbdServer({
      exports: [{ name: exportName, backend: backupBackend(reader, overlay, { windowChunks: readAhead }), description: `Cairn backup ${backupId}${overlay ? ' (writable overlay)' : ''}` }],
      ...limits,
      onError: options.onError,
      driver: DRIVER,
    });
    cleanups.push(() => server.close());
    const address = await server.listen(listen);
    let closing: Promise<void> | undefined;
    return {
      backupId,
      exportName,
      size: reader.size,
      readOnly: overlay === undefined,
      address,
      uri: nbdUri(address, exportName),
      get connectionCount() {
        return server.connectionCount;
      },
      close(closeOptions = {}) {
        closing ??= (async () => {
          await server.close(closeOptions);
          await cleanup();
        })();
        return closing;
      },
    };
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
