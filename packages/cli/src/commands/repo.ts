import type { Command } from 'commander';
import { withContext } from '../command-runner.js';
import { ExitCode } from '../exit-codes.js';
import { cancellableBySignal } from '../jobs/cancel-on-signal.js';
import { renderFields, renderTable } from '../output/table.js';
import { formatBytes, parseDuration, parseRepackThreshold, optionParser } from '../output/units.js';
import { verifyText } from '../output/views.js';

/** `cairn repo …`: maintenance of a target's chunked repository. */
export function registerRepoCommands(program: Command): void {
  const repo = program
    .command('repo')
    .description("maintenance of a target's repository")
    .option('-t, --target <name>', 'target from the config (default: defaultTarget)');
  const target = (cmd: Command) => (cmd.optsWithGlobals() as { target?: string }).target;

  repo
    .command('gc')
    .description('remove chunks no backup references and repack mostly-empty packs (exclusive lock: BUSY while a backup runs)')
    .option('--grace <duration>', 'never remove packs younger than this, e.g. 0, 10m, 1h', optionParser(parseDuration), 3_600_000)
    .option('--dry-run', 'report what would be removed, remove nothing', false)
    .option(
      '--repack-threshold <share>',
      'repack a pack once this share of its bytes is unreferenced (0 to 1), or never: only delete wholly unreferenced packs (writes no new pack: for a store short of space)',
      optionParser(parseRepackThreshold),
      0.25,
    )
    .action(
      withContext<{ grace: number; dryRun: boolean; repackThreshold: number }>(async (ctx, _a, o) => {
        await ctx.manager({ recover: true });
        const report = await (await ctx.repository(target(repo))).gc({ graceMs: o.grace, dryRun: o.dryRun, repackThreshold: o.repackThreshold });
        const lost = gcLostWarning(report);
        if (lost) ctx.out.warn(lost);
        ctx.out.result(report, () =>
          renderFields([
            ['backups', report.backups],
            ['packs deleted', report.packsDeleted],
            ['packs repacked', report.packsRepacked],
            ['packs in grace', report.packsInGrace],
            ['packs adopted', report.packsAdopted],
            ['chunk list pages deleted', report.pagesDeleted],
            ['chunk list pages in grace', report.pagesInGrace],
            ['catalog entries deleted', report.catalogEntriesDeleted],
            ['catalog keys not written by Cairn (left alone)', report.catalogKeysUnknown],
            ['pack keys not written by Cairn (left alone)', report.packKeysUnknown],
            ['chunk list keys not written by Cairn (left alone)', report.pageKeysUnknown],
            ['packs lost from the store', report.packsLost],
            ['chunks lost (backups name them; run repo verify)', report.chunksLost],
            ['leftovers of dead writers deleted', report.leftoversDeleted],
            ['damaged chunk copies replaced from a good copy', report.copiesDamaged],
            ['chunks with no readable copy (their packs kept)', report.chunksUnreadable],
            ['packs kept whole for them (run repo verify)', report.packsLeftUnreadable],
            ['chunks removed', report.chunksRemoved],
            ['bytes freed', formatBytes(report.bytesFreed)],
          ]) + (o.dryRun ? '\n(dry run: nothing removed)' : ''),
        );
        // Backups name data that is gone: damage, as verify's problems are (exit 5, CORRUPT).
        return report.chunksLost > 0 ? ExitCode.CORRUPT : ExitCode.OK;
      }),
    );

  repo
    .command('verify')
    .description('read and check every backup in the repository (exit 5 on any problem)')
    .action(
      withContext(async (ctx) => {
        ctx.expectDataFlow();
        const report = await (await ctx.repository(target(repo))).verify();
        ctx.out.result(report, () => verifyText(report));
        return report.problems.length === 0 ? ExitCode.OK : ExitCode.CORRUPT;
      }),
    );

  repo
    .command('stats')
    .description('size, dedup and layout of the repository')
    .action(
      withContext(async (ctx) => {
        // SIGINT/SIGTERM ends it (CANCELLED, exit 130) however long the store takes to list.
        const service = await ctx.repository(target(repo));
        const s = await cancellableBySignal(ctx.out, 'stats', (signal) => service.stats({ signal }));
        ctx.out.result(s, () =>
          renderFields([
            ['repository', s.id],
            ['encrypted', s.encrypted ? 'yes' : 'no'],
            ['chunk size', formatBytes(s.chunkSize)],
            ['compression', s.compression],
            ['backups', s.backups],
            ['packs', s.packs],
            ['chunks', s.chunks],
            ['raw bytes', formatBytes(s.rawBytes)],
            ['stored bytes', formatBytes(s.storedBytes)],
            ['ratio', s.rawBytes > 0 ? (s.storedBytes / s.rawBytes).toFixed(3) : undefined],
            ['chunk list pages', `${s.chunkListPages} (${formatBytes(s.chunkListBytes)})`],
          ]),
        );
      }),
    );

  repo
    .command('locks')
    .description("list the repository's locks (stale ones marked)")
    .action(
      withContext(async (ctx) => {
        const locks = await (await ctx.repository(target(repo))).locks();
        ctx.out.result(locks, () =>
          renderTable(locks, [
            { header: 'ID', value: (l) => l.id },
            { header: 'KIND', value: (l) => l.kind },
            { header: 'OWNER', value: (l) => `${l.owner.host}:${l.owner.pid}` },
            { header: 'PURPOSE', value: (l) => l.purpose },
            { header: 'EXPIRES', value: (l) => l.expiresAt },
            { header: 'STALE', value: (l) => (l.stale ? 'yes' : 'no') },
          ]),
        );
      }),
    );

  repo
    .command('unlock')
    .description('remove stale locks; with --force every lock (only when no Cairn process uses the repository)')
    .option('--force', 'remove every lock, live ones included', false)
    .action(
      withContext<{ force: boolean }>(async (ctx, _a, o) => {
        const removed = await (await ctx.repository(target(repo))).breakLocks({ all: o.force });
        ctx.out.result({ removed }, () => `removed ${removed.length} lock(s)`);
      }),
    );
}

/**
 * The warning GC's report calls for when the store lost packs the index named (deleted behind
 * Cairn's back): GC drops them from the index, and a later GC no longer sees them, so this run is
 * the one to say it. Undefined when nothing was lost.
 */
function gcLostWarning(report: { packsLost: number; chunksLost: number }): string | undefined {
  if (report.packsLost === 0 && report.chunksLost === 0) return undefined;
  const packs = report.packsLost > 0 ? `${report.packsLost} pack(s) named by the index are missing from the store (deleted or lost outside Cairn)` : 'no pack was found lost in this run';
  const chunks =
    report.chunksLost > 0
      ? `${report.chunksLost} chunk(s) that backups name have no copy left: those backups cannot be restored whole; run repo verify to list them`
      : 'every chunk a backup names still has a copy';
  return `${packs}; ${chunks}`;
}
