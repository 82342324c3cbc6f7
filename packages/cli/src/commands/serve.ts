import { resolve } from 'node:path';
import { CairnError, untilAborted } from '@cairn/core';
import { serveBackup, type BackupExport, type ServeBackupOptions } from '@cairn/nbd';
import type { Command } from 'commander';
import { withContext } from '../command-runner.js';
import { onInterrupt } from '../jobs/cancel-on-signal.js';
import { renderFields } from '../output/table.js';
import { formatBytes, optionParser } from '../output/units.js';
import { serveSocket } from './serve-socket.js';
import { wholeNumber } from './whole-number.js';

/** `127.0.0.1:10809` → {host, port}. `INVALID_INPUT` for anything else. */
function parseListen(text: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(text);
  if (!m) throw new CairnError('INVALID_INPUT', `--listen takes host:port (loopback only), not ${JSON.stringify(text)}`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
}

/** Largest `--max-connections`: each client holds a descriptor, and as many refused ones may wait. */
const MAX_CONNECTIONS = 10_000;

/** `--max-connections`: a whole number from 1 to 10000, in decimal digits only (wholeNumber). */
const parseMaxConnections = wholeNumber('--max-connections', 1, MAX_CONNECTIONS);

/** Resolves once `signal` is aborted (at once if it already is). */
const untilAbort = (signal: AbortSignal): Promise<void> =>
  new Promise((res) => (signal.aborted ? res() : signal.addEventListener('abort', () => res(), { once: true })));

/**
 * `cairn backup serve <id>`: any backup as an NBD export, read on demand from its repository,
 * until SIGINT/SIGTERM (then clients in flight are answered and the export closes cleanly, exit 0).
 * The signals are taken from the start: one while the backup is still being opened (the
 * repository's lock, the manifest, the chunk index: a store that hangs, such as a dead NFS mount)
 * ends the command with `CANCELLED` (exit 130) at once, leaving no lock in the repository and no
 * socket. A second signal exits at once with 130 (onInterrupt).
 */
export function registerServeCommand(backup: Command): void {
  backup
    .command('serve <id>')
    .description('serve a backup as an NBD export (read-only, or writes to a local overlay) until interrupted')
    .option('--socket <path>', 'listen on this unix socket (default: <state dir>/serve-<id>.sock, or a private dir under $TMPDIR or /tmp when that path is too long)')
    .option('--listen <host:port>', 'listen on a loopback TCP address instead, e.g. 127.0.0.1:10809 (port 0: any free port)')
    .option('--export-name <name>', 'export name clients ask for (default: the backup id)')
    .option('--writable-overlay <file>', 'accept writes into this copy-on-write file; the repository is never written')
    .option('--max-connections <n>', 'clients served at once; more are refused ("too many connections") (default: 16)', optionParser(parseMaxConnections))
    .action(
      withContext<{ socket?: string; listen?: string; exportName?: string; writableOverlay?: string; maxConnections?: number }>(async (ctx, [id], o) => {
        if (o.socket && o.listen) throw new CairnError('INVALID_INPUT', 'give either --socket or --listen, not both');
        const controller = new AbortController();
        let exp: BackupExport | undefined;
        let releaseSocket: (() => Promise<void>) | undefined;
        const removeHandlers = onInterrupt((sig) => {
          ctx.out.info(exp ? `${sig}: closing the export` : `${sig}: cancelling backup serve`);
          controller.abort(new CairnError('CANCELLED', `backup serve cancelled by ${sig}`));
        });
        try {
          const { signal } = controller;
          // Reading the record and opening the target take no signal: the wait for them ends (the
          // command's close still waits for a target being opened).
          const record = await untilAborted((async () => (await ctx.manager()).getBackup(id!))(), signal);
          if (record.status !== 'available') throw new CairnError('CONFLICT', `backup ${record.id} is ${record.status}, not available`);
          const service = await untilAborted(ctx.repository(record.service), signal);
          const socket = o.listen ? undefined : await serveSocket(ctx.stateDir, record.id, o.socket);
          releaseSocket = socket?.release;
          const listen: ServeBackupOptions['listen'] = socket ? { path: socket.path } : parseListen(o.listen!);
          exp = await serveBackup(service, record.id, {
            listen,
            exportName: o.exportName,
            writableOverlay: o.writableOverlay ? resolve(o.writableOverlay) : undefined,
            maxConnections: o.maxConnections,
            // Failures to accept a connection (out of file descriptors) are warnings: the export keeps serving.
            onError: (err) => ctx.out.warn(err.message),
            // Ends the opening (lock, manifest, index) with CANCELLED; not looked at once it listens.
            signal,
          });
          const view = { backupId: exp.backupId, exportName: exp.exportName, uri: exp.uri, size: exp.size, readOnly: exp.readOnly };
          const served = exp;
          ctx.out.result(view, () =>
            renderFields([
              ['backup', served.backupId],
              ['export', served.exportName],
              ['uri', served.uri],
              ['size', formatBytes(served.size)],
              ['mode', served.readOnly ? 'read-only' : `writable (overlay ${o.writableOverlay})`],
            ]) + '\nserving until interrupted (Ctrl-C)',
          );
          await untilAbort(signal);
          await exp.close();
        } finally {
          removeHandlers();
          await releaseSocket?.();
        }
      }),
    );
}
