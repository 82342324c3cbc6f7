import { resolve } from 'node:path';
import { BACKUP_SORT_KEYS, BACKUP_STATUSES, CairnError, isCairnError, MAX_BACKUP_PAGE_LIMIT, parseBackupSort, parsePageLimit, type BackupRecord, type BackupStatus, type RecoveryReport } from '@cairn/core';
import type { Command } from 'commander';
import { importArchive } from '../archive/importer.js';
import { exportBackup } from '../archive/writer.js';
import { defaultArchiveStaging } from '../archive/staging.js';
import { withContext } from '../command-runner.js';
import { registerServeCommand } from './serve.js';
import type { CliContext } from '../context.js';
import { ExitCode } from '../exit-codes.js';
import { accessError, checkInputFile, readBounded } from '../io/input-file.js';
import { outputPath, WRITE_THROUGH_HELP } from '../io/output-path.js';
import { writeFileWhole } from '../io/partial-file.js';
import { cancellableBySignal } from '../jobs/cancel-on-signal.js';
import { cancelJob, jobSubject, listJobs, prepareJobsDirectory, removeStaleJob, staleReason } from '../jobs/job-files.js';
import { runJob } from '../jobs/run-job.js';
import { phasedProgress } from '../output/phased-progress.js';
import { progressReporter } from '../output/progress.js';
import { printRecovery } from '../output/recovery-report.js';
import { restoreResult } from '../output/restore-result.js';
import { renderFields, renderTable } from '../output/table.js';
import { shownText } from '../output/terminal-text.js';
import { formatBytes, parseSeconds, parseSize, optionParser } from '../output/units.js';
import { writeStdout } from '../output/stdout.js';
import { backupColumns, backupJson, backupText, verifyText } from '../output/views.js';

const list = (ctx: CliContext, rows: BackupRecord[]) => ctx.out.result(rows.map(backupJson), () => renderTable(rows, backupColumns));

/** `cairn backup …`: the BackupManager's flow (create, restore, delete, verify, cancel, reset-state) plus archives and record export. */
export function registerBackupCommands(program: Command): void {
  const backup = program.command('backup').description('back up, restore, verify and move backups');
  registerServeCommand(backup);

  backup
    .command('create <volume>')
    .description('back up a volume (by id or unique name) to a target')
    .option('-i, --incremental', "base the backup on the volume's latest available backup in the target", false)
    .option('--force', 'back up a volume in use through a temporary snapshot', false)
    .option('-n, --name <name>', 'backup name')
    .option('-d, --description <text>', 'backup description')
    .option('-t, --target <name>', 'target from the config (default: defaultTarget)')
    .option('--read-rate <size>', 'read the volume at most this many bytes per second, e.g. 50MiB', optionParser(parseSize))
    .action(
      withContext<{ incremental: boolean; force: boolean; name?: string; description?: string; target?: string; readRate?: number }>(async (ctx, [ref], o) => {
        ctx.expectDataFlow();
        await prepareJobsDirectory(ctx.stateDir); // before anything is written: the job must be recordable
        const manager = await ctx.manager({ recover: true, readRate: o.readRate });
        const v = await ctx.resolveVolume(ref!);
        const job = await manager.startBackup({ volumeId: v.id, incremental: o.incremental, force: o.force, name: o.name, description: o.description, target: o.target });
        const record = await runJob(manager, job, ctx.stateDir, ctx.out, ctx.cancelHint(job.id));
        ctx.out.result(backupJson(record), () => backupText(record));
      }),
    );

  backup
    .command('list')
    .description('list backups, oldest first unless --sort says otherwise')
    .option('--volume <volume>', 'only backups of this volume (id, or name of an existing volume)')
    .option('--status <status>', `only backups in this status (${BACKUP_STATUSES.join(', ')})`)
    .option('--name <name>', 'only backups of exactly this name')
    .option('--sort <key[:dir],…>', `order by these keys (${BACKUP_SORT_KEYS.join(', ')}), each asc (default) or desc, e.g. createdAt:desc`)
    .option('--limit <n>', `at most this many backups (1 to ${MAX_BACKUP_PAGE_LIMIT})`)
    .option('--marker <id>', 'start after this backup (the last one of the previous page)')
    .action(
      withContext<{ volume?: string; status?: string; name?: string; sort?: string; limit?: string; marker?: string }>(async (ctx, _args, o) => {
        const limit = o.limit === undefined ? undefined : parsePageLimit(o.limit);
        const sort = o.sort === undefined ? undefined : parseBackupSort(o.sort);
        const manager = await ctx.manager();
        const volumeId = o.volume === undefined ? undefined : await ctx.listedVolumeId(o.volume);
        // Checked by the manager too (INVALID_INPUT): the cast only carries the caller's text there.
        const page = await manager.listBackupPage({ volumeId, status: o.status as BackupStatus | undefined, name: o.name, sort, marker: o.marker, limit });
        // Not silenced by --quiet: without it a script paging with --quiet cannot tell a full page from the last.
        if (page.next !== undefined) ctx.out.notice(`more backups follow: next page with --marker ${page.next}`);
        list(ctx, page.backups);
      }),
    );

  backup
    .command('show <id>')
    .description('show one backup')
    .action(
      withContext(async (ctx, [id]) => {
        const b = await (await ctx.manager()).getBackup(id!);
        ctx.out.result(backupJson(b), () => backupText(b));
      }),
    );

  backup
    .command('children <id>')
    .description('backups whose parent is this backup')
    .action(withContext(async (ctx, [id]) => list(ctx, await (await ctx.manager()).children(id!))));

  backup
    .command('restore <id>')
    .description('restore a backup to an existing volume (--to) or a new one (--new)')
    .option('--to <volume>', 'existing volume to overwrite (available, at least the backup size)')
    .option('--new', 'restore to a new volume', false)
    .option('-n, --name <name>', 'name of the new volume (with --new)')
    .action(
      withContext<{ to?: string; new: boolean; name?: string }>(async (ctx, [id], o) => {
        ctx.expectDataFlow();
        if (!!o.to === o.new) throw new CairnError('INVALID_INPUT', 'give exactly one of --to <volume> and --new');
        if (o.name !== undefined && !o.new) throw new CairnError('INVALID_INPUT', '--name goes with --new');
        await prepareJobsDirectory(ctx.stateDir); // before anything is written: the job must be recordable
        const manager = await ctx.manager({ recover: true });
        const request = o.to ? { backupId: id!, volumeId: (await ctx.resolveVolume(o.to)).id } : { backupId: id!, newVolume: { name: o.name } };
        const { job, volume, metadataKept } = await manager.startRestore(request);
        const record = await runJob(manager, job, ctx.stateDir, ctx.out, ctx.cancelHint(job.id));
        // The restore succeeded: a volume that cannot be read again now is a warning, not a failure.
        const result = await restoreResult(manager, record, volume, metadataKept);
        if (result.volumeError) ctx.out.warn(`the restore succeeded, but volume ${volume.id} could not be read again: ${result.volumeError.message}`);
        ctx.out.result(result, () => `restored backup ${shownText(record.id)} to volume ${shownText(result.volume.id)} (${shownText(result.volume.name)})`);
      }),
    );

  backup
    .command('delete <id>')
    .description('delete a backup (its chunks go at the next repo gc)')
    .option('--cascade', 'also delete backups that depend on it (targets with dependent chains)', false)
    .action(
      withContext<{ cascade: boolean }>(async (ctx, [id], o) => {
        // Recovered here rather than by ctx.manager({ recover: true }): its report says whether
        // this run finished a delete of this backup that a dead process left (resumedDeletes).
        const manager = await ctx.manager();
        const report = await manager.recover();
        printRecovery(ctx.out, report, 'an earlier run');
        try {
          await manager.deleteBackup(id!, { cascade: o.cascade });
        } catch (err) {
          // The backup is gone because this run's recovery finished its delete: that is this
          // command's delete done, so it is reported as one (exit 0), not NOT_FOUND.
          if (!(isCairnError(err) && err.code === 'NOT_FOUND' && recoveryDeleted(report, id!))) throw err;
        }
        ctx.out.result({ deleted: id }, () => `deleted backup ${shownText(id!)}`);
      }),
    );

  backup
    .command('verify [id]')
    .description('read and check one backup, or every backup of every target (exit 5 on any problem)')
    .action(
      withContext(async (ctx, [id]) => {
        ctx.expectDataFlow();
        const progress = progressReporter('verify', ctx.out.options);
        const report = await (await ctx.manager()).verify(id, { progress: progress.update }).finally(() => progress.stop());
        ctx.out.result(report, () => verifyText(report));
        return report.problems.length === 0 ? ExitCode.OK : ExitCode.CORRUPT;
      }),
    );

  backup
    .command('reset-state <id>')
    .description("set a backup's state by hand (Cinder's backup-reset-state): for a record stuck in a flow whose process is gone for good (another machine, a removed container); available only once verify finds its data whole")
    .option('--state <state>', 'available or error', 'error')
    .action(
      withContext<{ state: string }>(async (ctx, [id], o) => {
        if (o.state !== 'available' && o.state !== 'error') throw new CairnError('INVALID_INPUT', `--state takes available or error, not ${JSON.stringify(o.state)}`);
        if (o.state === 'available') ctx.expectDataFlow();
        const manager = await ctx.manager({ recover: true });
        const progress = progressReporter('verify', ctx.out.options);
        const record = await manager.resetState(id!, o.state, { progress: progress.update }).finally(() => progress.stop());
        ctx.out.result(backupJson(record), () => backupText(record));
      }),
    );

  backup
    .command('jobs')
    .description('backup and restore jobs running from this state directory')
    .action(
      withContext(async (ctx) => {
        // Records whose process exited (or whose pid now names another process) are reported and removed.
        const all = await listJobs(ctx.stateDir, (m) => ctx.out.warn(m));
        for (const stale of all.filter((j) => !j.alive)) {
          await removeStaleJob(ctx.stateDir, stale);
          ctx.out.warn(`job ${stale.id} (${jobSubject(stale)}) is dead: ${staleReason(stale, stale.state)}; removed its record`);
        }
        const jobs = all.filter((j) => j.alive);
        ctx.out.result(jobs.map(({ alive: _a, state: _s, pidStartTime: _t, ...j }) => j), () =>
          renderTable(jobs, [
            { header: 'JOB', value: (j) => j.id },
            { header: 'KIND', value: (j) => j.kind },
            { header: 'BACKUP', value: (j) => j.backupId },
            { header: 'VOLUME', value: (j) => j.volumeId },
            { header: 'PID', value: (j) => j.pid, right: true },
            { header: 'STARTED', value: (j) => j.startedAt },
          ]),
        );
      }),
    );

  backup
    .command('cancel <job>')
    .description('cancel a running backup or restore job (signals the process running it and waits for it to stop)')
    .option('--wait <seconds>', 'how long to wait for the job to stop', optionParser(parseSeconds), 30)
    .action(
      withContext<{ wait: number }>(async (ctx, [id], o) => {
        const job = await cancelJob(ctx.stateDir, id!, o.wait * 1000);
        ctx.out.result({ cancelled: job.id, kind: job.kind, backupId: job.backupId, pid: job.pid }, () => `cancelled ${shownText(job.kind)} job ${shownText(job.id)} (process ${job.pid})`);
      }),
    );

  backup
    .command('export <id>')
    .description('write a backup as a self-contained, verifiable tar archive')
    .requiredOption('-a, --archive <file>', 'archive file to write (.tar; not "-": an archive is only ever a complete file)')
    .option('--force', `overwrite an existing file (${WRITE_THROUGH_HELP})`, false)
    .option('--staging-dir <dir>', "existing directory to restore the backup's data in before it is archived (default: <stateDir>/staging)")
    .action(
      withContext<{ archive: string; force: boolean; stagingDir?: string }>(async (ctx, [id], o) => {
        // Not stdout: the archive appears whole or not at all (written beside, then renamed), which a
        // stream cannot do. A file named "-" is `./-`.
        if (o.archive === '-') throw new CairnError('INVALID_INPUT', 'backup export cannot write an archive to stdout ("-"): name a file (for a file named "-", ./-)');
        ctx.expectDataFlow();
        const file = await outputPath(resolve(o.archive), o.force);
        // Staged on disk (<stateDir>/staging, made on first use), not in a tmpfs $TMPDIR: a backup's data may be large.
        const stagingDir = o.stagingDir !== undefined ? resolve(o.stagingDir) : defaultArchiveStaging(ctx.stateDir);
        // Recovers first: the export claims the backup, and a claim a killed export left is settled.
        const manager = await ctx.manager({ recover: true });
        const progress = phasedProgress('export', ctx.out.options);
        // SIGINT/SIGTERM cancel the export: its partial archive and staging volume are removed, its claim released.
        const { notDurable, ...result } = await cancellableBySignal(ctx.out, 'export', (signal) => exportBackup(manager, id!, file, { progress: progress.update, signal, stagingDir, makeStagingDir: o.stagingDir === undefined })).finally(() => progress.stop());
        if (notDurable) ctx.out.warn(notDurable.message); // in place, but perhaps not durable: said, not failed
        ctx.out.result(result, () =>
          renderFields([
            ['archive', result.file],
            ['backup', result.backupId],
            ['size', formatBytes(result.size)],
            ['data', `${formatBytes(result.dataBytes)} in ${result.chunks} chunk(s)`],
          ]),
        );
      }),
    );

  backup
    .command('import <archive>')
    .description('check an archive completely, then write its data into a target and register the backup')
    .option('-t, --target <name>', 'target from the config (default: defaultTarget)')
    .option('--staging-dir <dir>', "existing directory to check the archive's data in before it is written (default: <stateDir>/staging)")
    .action(
      withContext<{ target?: string; stagingDir?: string }>(async (ctx, [file], o) => {
        ctx.expectDataFlow();
        await checkInputFile(resolve(file!), 'archive');
        // Staged on disk (<stateDir>/staging, made on first use), not in a tmpfs $TMPDIR: an archive's data may be large.
        const stagingDir = o.stagingDir !== undefined ? resolve(o.stagingDir) : defaultArchiveStaging(ctx.stateDir);
        await ctx.manager({ recover: true });
        const progress = phasedProgress('import', ctx.out.options);
        const to = { service: await ctx.target(o.target), catalog: await ctx.catalog() };
        // SIGINT/SIGTERM cancel the import: before its data is written the claim is removed, after it the record ends error (importArchive).
        const record = await cancellableBySignal(ctx.out, 'import', (signal) => importArchive(to, resolve(file!), { progress: progress.update, signal, stagingDir, makeStagingDir: o.stagingDir === undefined })).finally(() => progress.stop());
        ctx.out.result(backupJson(record), () => backupText(record));
      }),
    );

  backup
    .command('export-record <id>')
    .description("print a backup's record (Cinder's export_record) for a deployment that reaches the same repository")
    .option('-o, --output <file>', 'write the record to a file instead of stdout ("-": stdout)')
    .action(
      withContext<{ output?: string }>(async (ctx, [id], o) => {
        const doc = await (await ctx.manager()).exportRecord(id!);
        const text = `${JSON.stringify(doc, null, 2)}\n`;
        if (o.output && o.output !== '-') {
          // Replaced if it exists (as documented); a symbolic link is written through.
          const file = await outputPath(resolve(o.output), true);
          // Whole or not at all: an existing file keeps its content until the new one is complete
          // (written in a private directory beside it, as volume and archive exports write: createPartialFile).
          const { notDurable } = await writeFileWhole(file, text).catch((err: unknown) => Promise.reject(accessError(err, file, 'write')));
          if (notDurable) ctx.out.warn(notDurable.message); // in place, but perhaps not durable: said, not failed
          ctx.out.result({ exported: id, file }, () => `wrote the record of backup ${shownText(id!)} to ${shownText(file)}`);
        } else {
          writeStdout(text);
        }
      }),
    );

  backup
    .command('import-record [file]')
    .description('register a record written by export-record (from a file, or stdin when omitted or "-")')
    .option('-t, --target <name>', "target holding the backup's data (default: the record's own target name)")
    .action(
      withContext<{ target?: string }>(async (ctx, [file], o) => {
        const text = !file || file === '-' ? await readBounded(process.stdin, RECORD_LIMIT, 'the exported record on stdin') : await readRecordFile(resolve(file));
        let doc: { service?: unknown; record?: unknown };
        try {
          doc = JSON.parse(text);
        } catch (cause) {
          throw new CairnError('INVALID_INPUT', 'the exported record is not JSON (expected {"service", "record"} from export-record)', { cause });
        }
        if (typeof doc?.record !== 'string' || typeof doc.service !== 'string') throw new CairnError('INVALID_INPUT', 'the exported record must be {"service": string, "record": string}');
        const record = await (await ctx.manager({ recover: true })).importRecord(o.target ?? doc.service, doc.record);
        ctx.out.result(backupJson(record), () => backupText(record));
      }),
    );
}

/**
 * The most an exported record may take: export-record writes a few KiB (the record and its
 * volume metadata); the bound keeps an endless input from exhausting memory.
 */
const RECORD_LIMIT = 16 * 1024 * 1024;

/** The text of an exported record file, a regular file or a pipe (`<(…)`); errors as checkInputFile and readBounded say. */
async function readRecordFile(file: string): Promise<string> {
  await checkInputFile(file, 'record file', { stream: true });
  return readBounded(file, RECORD_LIMIT, `record file ${file}`);
}

/**
 * Whether `report` says its recovery finished the delete of `backupId`: resumed
 * (RecoveryReport.resumedDeletes) and no error reported for it (an error leaves the record).
 */
function recoveryDeleted(report: RecoveryReport, backupId: string): boolean {
  return report.resumedDeletes.includes(backupId) && !report.errors.some((e) => e.startsWith(`${backupId}: `));
}
