import { CairnError } from '@cairn/core';
import type { Command } from 'commander';
import { assertListenAllowed, isLoopback, loadToken, parseListen } from '../api/auth.js';
import { IdleRelease, IDLE_RELEASE_MS } from '../api/idle-release.js';
import { DEFAULT_MAX_CONNECTIONS } from '../api/connection-limit.js';
import { DEFAULT_KEEP_JOBS, DEFAULT_KEEP_JOBS_BYTES, DEFAULT_MAX_DATA_JOBS, DEFAULT_MAX_MAINTENANCE_JOBS, JobTable } from '../api/jobs.js';
import { PeriodicRecovery } from '../api/periodic-recovery.js';
import { printRecovery } from '../output/recovery-report.js';
import { timeoutsFromEnv } from '../api/server-timeouts.js';
import { loadTls } from '../api/tls.js';
import { withContext } from '../command-runner.js';
import { ExitCode } from '../exit-codes.js';
import { optionParser, parseSeconds, parseSize } from '../output/units.js';
import { wholeNumber } from './whole-number.js';

/** Default `--listen`: loopback only. */
export const DEFAULT_LISTEN = '127.0.0.1:8470';

/** `--keep-jobs`: a whole number from 1 to 10000. */
const parseKeepJobs = wholeNumber('--keep-jobs', 1, 10_000);

/** `--keep-jobs-bytes`: a size from 1 KiB to 16 GiB. */
function parseKeepJobsBytes(text: string): number {
  const n = parseSize(text);
  if (n < 1024 || n > 16 * 1024 ** 3) throw new CairnError('INVALID_INPUT', `--keep-jobs-bytes takes a size from 1KiB to 16GiB, not ${JSON.stringify(text)}`);
  return n;
}

/** `--max-connections`: a whole number from 1 to 10000 (as `backup serve`'s). */
const parseMaxConnections = wholeNumber('--max-connections', 1, 10_000);

/** `--max-maintenance-jobs`: a whole number from 1 to 64. */
const parseMaxMaintenance = wholeNumber('--max-maintenance-jobs', 1, 64);

/** `--max-data-jobs`: a whole number from 0 (no limit, as Cinder's `backup_max_operations`) to 1024. */
const parseMaxDataJobs = wholeNumber('--max-data-jobs', 0, 1024);

/** Default `--recover-interval`, seconds. */
export const DEFAULT_RECOVER_INTERVAL = 60;

/** Shortest `--recover-interval` other than 0, seconds. */
const MIN_RECOVER_INTERVAL = 1;

/** `--recover-interval`: 0 (never again after the start), or seconds from 1 to 86400 (a day). */
function parseRecoverInterval(text: string): number {
  const n = parseSeconds(text);
  if ((n !== 0 && n < MIN_RECOVER_INTERVAL) || n > 86_400) throw new CairnError('INVALID_INPUT', `--recover-interval takes 0 or seconds from ${MIN_RECOVER_INTERVAL} to 86400, not ${JSON.stringify(text)}`);
  return n;
}

/**
 * Resolves with the first SIGINT/SIGTERM. A second signal while shutting down exits at once with
 * 130, as a second Ctrl-C does for a foreground job.
 */
function untilSignal(onSecond: () => void): Promise<NodeJS.Signals> {
  return new Promise((res) => {
    let seen = false;
    const handler = (s: NodeJS.Signals) => {
      if (seen) return onSecond();
      seen = true;
      res(s);
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
  });
}

/**
 * `cairn serve`: the REST API (docs/api.md) for backup software to drive Cairn. One context,
 * manager and set of targets for the process's lifetime, so worker threads and open repositories
 * stay warm between requests. Prints the bound address once listening. On SIGINT/SIGTERM: stops
 * accepting requests at once (a periodic recovery run in progress is waited for alongside, not
 * before), cancels the running jobs, waits for them, that run and the requests still being
 * handled (ApiServer.shutdown) to settle, closes the targets and exits 0. A signal during start-up (opening the targets, the first recovery) lets the step
 * under way finish (recovery leaves records consistent and releases its locks), then closes the
 * targets and exits 0 without listening. A second signal exits at once with 130.
 *
 * Recovery (records that processes which died left in flight) runs at the start and again every
 * `--recover-interval` seconds after (PeriodicRecovery). It leaves the server's running jobs alone
 * (core's recover() skips the records a flow of this process holds: flow/live-records.ts), and
 * resolves a record of this process that no flow holds any more (a job whose final catalog write
 * failed), as it resolves a dead process's.
 */
export function registerApiServeCommand(program: Command, version: string): void {
  program
    .command('serve')
    .description('serve the REST API for backup software (docs/api.md) until SIGINT/SIGTERM')
    .option('--listen <host:port>', 'address to listen on (port 0: a free port); other than loopback only with --token-file', DEFAULT_LISTEN)
    .option('--token-file <file>', 'require Authorization: Bearer <token> on every request, with the token read from this file')
    .option('--tls-cert <file>', 'speak HTTPS with this PEM certificate (chain); needs --tls-key')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert (not encrypted)')
    .option('--read-rate <size>', 'read volumes at most this many bytes per second, shared by all backups of the server, e.g. 50MiB', optionParser(parseSize))
    .option('--keep-jobs <n>', 'ended jobs kept for clients to read, 1 to 10000 (oldest forgotten first)', optionParser(parseKeepJobs), DEFAULT_KEEP_JOBS)
    .option(
      '--keep-jobs-bytes <size>',
      'at most this much of ended jobs (their JSON) kept for clients to read, 1KiB to 16GiB (oldest forgotten first; the last ended is always kept)',
      optionParser(parseKeepJobsBytes),
      DEFAULT_KEEP_JOBS_BYTES,
    )
    .option('--max-connections <n>', 'connections held open at once, 1 to 10000; one more is closed at once, unanswered', optionParser(parseMaxConnections), DEFAULT_MAX_CONNECTIONS)
    .option(
      '--max-maintenance-jobs <n>',
      'verify and gc jobs run at once (each reads a whole repository or backup); one more is refused with BUSY (409, Retry-After)',
      optionParser(parseMaxMaintenance),
      DEFAULT_MAX_MAINTENANCE_JOBS,
    )
    .option(
      '--max-data-jobs <n>',
      'backups and restores run at once, 0 to 1024 (0: no limit); more are accepted (202) and wait in line, first come first served',
      optionParser(parseMaxDataJobs),
      DEFAULT_MAX_DATA_JOBS,
    )
    .option(
      '--recover-interval <seconds>',
      'also resolve, this often (1 to 86400 s), what processes that died left in flight (records stuck creating, restoring or deleting); jobs still running are left alone; 0: only at start',
      optionParser(parseRecoverInterval),
      DEFAULT_RECOVER_INTERVAL,
    )
    .action(
      withContext<{ listen: string; tokenFile?: string; tlsCert?: string; tlsKey?: string; readRate?: number; keepJobs: number; keepJobsBytes: number; maxConnections: number; maxMaintenanceJobs: number; maxDataJobs: number; recoverInterval: number }>(async (ctx, _args, o) => {
        // Refusals come before anything is opened.
        const listen = parseListen(o.listen);
        const auth = o.tokenFile === undefined ? undefined : await loadToken(ctx.registry, o.tokenFile);
        const tls = await loadTls(o.tlsCert, o.tlsKey);
        assertListenAllowed(listen, auth !== undefined);
        const timeouts = timeoutsFromEnv(process.env);
        if (auth?.warning) ctx.out.warn(auth.warning);
        if (!tls && !isLoopback(listen.host)) ctx.out.warn(`listening on ${listen.host} without TLS: the token crosses the network in clear unless a TLS-terminating proxy sits in front (or give --tls-cert and --tls-key)`);

        // From here on a signal stops the server cleanly, during start-up too: the step under way
        // (opening the targets, recovery) ends, nothing after it starts, the targets are closed
        // (withContext) and the process exits 0 without having listened.
        const stopped = untilSignal(() => {
          ctx.out.warn('second signal: exiting without waiting for the jobs');
          process.exit(ExitCode.CANCELLED);
        });
        let stopping: NodeJS.Signals | undefined;
        void stopped.then((s) => (stopping = s));
        const stoppedAtStart = () => {
          ctx.out.info(`${stopping}: stopped during start-up, before serving`);
          return ExitCode.OK;
        };

        // Everything requests use, opened once: targets (worker threads), catalog, manager.
        ctx.expectDataFlow();
        // At most --max-data-jobs backups and restores run at once: the manager's maxDataJobs.
        const manager = await ctx.manager({ readRate: o.readRate, maxDataJobs: o.maxDataJobs });
        if (stopping) return stoppedAtStart();
        printRecovery(ctx.out, await manager.recover(), 'an earlier run');
        if (stopping) return stoppedAtStart();
        // Loaded here so that other commands do not pay for loading the HTTP framework.
        const { ApiServer } = await import('../api/server.js');
        // Memory kept for reuse goes back once the server has been idle for a while.
        const idle = new IdleRelease(IDLE_RELEASE_MS, () => jobs.running === 0);
        const jobs = new JobTable(o.keepJobs, () => idle.idle(), o.maxMaintenanceJobs, o.keepJobsBytes);
        const recovery = new PeriodicRecovery({
          intervalMs: o.recoverInterval * 1000,
          recover: () => manager.recover(),
          onReport: (r) => printRecovery(ctx.out, r, 'processes that ended'),
          onError: (err) => ctx.out.warn(`recovery failed (tried again in ${o.recoverInterval} s): ${(err as Error)?.message ?? String(err)}`),
        });
        const server = new ApiServer(
          { cli: ctx, manager, jobs, version },
          { token: auth?.token, tls, log: (line) => ctx.out.info(line), onServerError: (err) => ctx.out.error(err), timeouts, maxConnections: o.maxConnections },
        );
        const bound = await server.listen(listen);
        if (o.recoverInterval > 0) recovery.start();
        const view = { listening: bound.url, host: bound.host, port: bound.port, version, auth: auth ? 'bearer' : 'none' };
        // One line either way, so a supervisor can read the address from the first line of stdout.
        if (ctx.out.json) process.stdout.write(`${JSON.stringify(view)}\n`);
        else process.stdout.write(`listening on ${bound.url} (${auth ? 'bearer token required' : 'no authentication: loopback only'}); stop with Ctrl-C or SIGTERM\n`);

        const signal = await stopped;
        const running = jobs.running;
        ctx.out.info(`${signal}: shutting down${running ? `, cancelling ${running} running job(s)` : ''}`);
        // Both at once: the server stops accepting at once, even while a periodic recovery run
        // goes on (one may wait long, e.g. on a record section another process holds); that run
        // is waited for before the targets close, and no other starts.
        await Promise.all([server.shutdown(), recovery.stop()]);
        idle.stop();
        ctx.out.info('stopped');
        return ExitCode.OK;
      }),
    );
}
