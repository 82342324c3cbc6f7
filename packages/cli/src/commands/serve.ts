import { resolve } from 'node:path';
import { CairnError } from '@cairn/core';
import { serveBackup, type ServeBackupOptions } from '@cairn/nbd';
import type { Command } from 'commander';
import { withContext } from '../command-runner.js';
import { renderFields } from '../output/table.js';
import { formatBytes, optionParser } from '../output/units.js';
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

/** Resolves when the process gets SIGINT or SIGTERM. */
const untilSignal = (): Promise<NodeJS.Signals> =>
  new Promise((res) => {
    const stop = (s: NodeJS.Signals) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      res(s);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });

/**
 * `cairn backup serve <id>`: any backup as an NBD export, read on demand from its repository,
 * until SIGINT/SIGTERM (then clients in flight are answered and the export closes cleanly).
 */
export function registerServeCommand(backup: Command): void {
  backup
    .command('serve <id>')
    .description('serve a backup as an NBD export (read-only, or writes to a local overlay) until interrupted')
    .option('--socket <path>', 'listen on this unix socket (default: <state dir>/serve-<id>.sock)')
    .option('--listen <host:port>', 'listen on a loopback TCP address instead, e.g. 127.0.0.1:10809 (port 0: any free port)')
    .option('--export-name <name>', 'export name clients ask for (default: the backup id)')
    .option('--writable-overlay <file>', 'accept writes into this copy-on-write file; the repository is never written')
    .option('--max-connections <n>', 'clients served at once; more are refused ("too many connections") (default: 16)', optionParser(parseMaxConnections))
    .action(
      withContext<{ socket?: string; listen?: string; exportName?: string; writableOverlay?: string; maxConnections?: number }>(async (ctx, [id], o) => {
        if (o.socket && o.listen) throw new CairnError('INVALID_INPUT', 'give either --socket or --listen, not both');
        const record = await (await ctx.manager()).getBackup(id!);
        if (record.status !== 'available') throw new CairnError('CONFLICT', `backup ${record.id} is ${record.status}, not available`);
        const service = await ctx.repository(record.service);
        const listen: ServeBackupOptions['listen'] = o.listen ? parseListen(o.listen) : { path: resolve(o.socket ?? `${ctx.stateDir}/serve-${record.id}.sock`) };
        const exp = await serveBackup(service, record.id, {
          listen,
          exportName: o.exportName,
          writableOverlay: o.writableOverlay ? resolve(o.writableOverlay) : undefined,
          maxConnections: o.maxConnections,
          // Failures to accept a connection (out of file descriptors) are warnings: the export keeps serving.
          onError: (err) => ctx.out.warn(err.message),
        });
        const view = { backupId: exp.backupId, exportName: exp.exportName, uri: exp.uri, size: exp.size, readOnly: exp.readOnly };
        ctx.out.result(view, () =>
          renderFields([
            ['backup', exp.backupId],
            ['export', exp.exportName],
            ['uri', exp.uri],
            ['size', formatBytes(exp.size)],
            ['mode', exp.readOnly ? 'read-only' : `writable (overlay ${o.writableOverlay})`],
          ]) + '\nserving until interrupted (Ctrl-C)',
        );
        const signal = await untilSignal();
        ctx.out.info(`${signal}: closing the export`);
        await exp.close();
      }),
    );
}
