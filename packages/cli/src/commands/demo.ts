import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CairnError, makeDirectories, type BackupManager, type BackupRecord, type VolumeDriver } from '@cairn/core';
import type { Command } from 'commander';
import { reportCloseFailure, withoutContext } from '../command-runner.js';
import { embeddedDefaults } from '../config/load.js';
import { CliContext, type GlobalOptions } from '../context.js';
import { ExitCode } from '../exit-codes.js';
import { cancellableBySignal } from '../jobs/cancel-on-signal.js';
import { runJob } from '../jobs/run-job.js';
import type { Output } from '../output/output.js';
import { renderTable } from '../output/table.js';
import { formatBytes, formatDuration, parseSize, optionParser } from '../output/units.js';

const MiB = 1024 * 1024;
const TEXT = Buffer.from('Cairn keeps each backup as a manifest over shared chunks; lorem ipsum dolor sit amet. '.repeat(12_500));

/**
 * How the demo's jobs are cancelled: `cairn backup cancel` from another shell would look in that
 * shell's state directory, not in the demo's, and answer NOT_FOUND.
 */
const CANCEL_HINT = 'Ctrl-C cancels the demo';

interface Row {
  step: string;
  id: string;
  size: number;
  bytesRead?: number;
  bytesStored?: number;
  durationMs: number;
  check?: 'byte-exact' | 'MISMATCH';
}

/**
 * `cairn demo`: the main job end to end on the embedded defaults, with byte-for-byte checks. The
 * temporary directory (without `--dir` or `--keep`) is removed whatever the outcome, a SIGINT or
 * SIGTERM included: the signal cancels the step under way (CANCELLED, exit 130), which cleans up
 * as on any failure; a second signal exits at once.
 */
export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('full + incremental backup of a volume with realistic content, two restores, byte-for-byte checks (exit 5 on a mismatch)')
    .option('--dir <dir>', 'work here (kept afterwards) instead of a temporary directory (removed afterwards)')
    .option('-s, --size <size>', 'size of the demo volume', optionParser(parseSize), 64 * MiB)
    .option('--keep', 'keep the temporary directory', false)
    .action(
      withoutContext<{ dir?: string; size: number; keep: boolean }>(async (out, _a, o, globals) => {
        if (o.size < MiB || o.size % MiB !== 0) throw new CairnError('INVALID_INPUT', '--size must be a whole number of MiB, at least 1MiB');
        return cancellableBySignal(out, 'demo', (signal) => demo(out, o, globals, signal));
      }),
    );
}

/** The demo in `o.dir` or a temporary directory, which it removes in the end (see registerDemoCommand). */
async function demo(out: Output, o: { dir?: string; size: number; keep: boolean }, globals: GlobalOptions, signal: AbortSignal): Promise<number> {
  const dir = o.dir ? resolve(o.dir) : await mkdtemp(join(tmpdir(), 'cairn-demo-'));
  await makeDirectories(dir);
  const config = embeddedDefaults(dir);
  const ctx = CliContext.forConfig({ file: undefined, config, stateDir: config.stateDir }, { ...globals, config: undefined }, out);
  // The demo's exit code; undefined while it has none (it is failing with an error).
  let code: number | undefined;
  try {
    const rows = await runDemo(ctx, o.size, signal);
    const ok = rows.every((r) => r.check !== 'MISMATCH');
    out.result({ directory: dir, kept: !!o.dir || o.keep, volumeSize: o.size, ok, steps: rows }, () =>
      [
        renderTable(rows, [
          { header: 'STEP', value: (r) => r.step },
          { header: 'SIZE', value: (r) => formatBytes(r.size), right: true },
          { header: 'BYTES READ', value: (r) => (r.bytesRead === undefined ? undefined : formatBytes(r.bytesRead)), right: true },
          { header: 'BYTES STORED', value: (r) => (r.bytesStored === undefined ? undefined : formatBytes(r.bytesStored)), right: true },
          { header: 'TIME', value: (r) => formatDuration(r.durationMs), right: true },
          { header: 'CHECK', value: (r) => r.check },
        ]),
        ok ? 'all restores are byte-exact' : 'A RESTORE DIFFERS FROM ITS SOURCE',
      ].join('\n'),
    );
    code = ok ? ExitCode.OK : ExitCode.CORRUPT;
  } finally {
    // A failed close is reported as every command reports it (command-runner's reportCloseFailure).
    const unclosed = await ctx.close();
    if (unclosed) code = reportCloseFailure(out, unclosed, code ?? ExitCode.INTERNAL);
    if (!o.dir && !o.keep) await rm(dir, { recursive: true, force: true });
    else out.info(`demo files kept in ${dir}`);
  }
  return code;
}

/** The demo's steps. `signal` stops them (CANCELLED) at the next MiB written or compared, or through the running job. */
async function runDemo(ctx: CliContext, size: number, signal: AbortSignal): Promise<Row[]> {
  ctx.expectDataFlow();
  const volumes = await ctx.volumes();
  const manager = await ctx.manager({ recover: true });
  const rows: Row[] = [];
  signal.throwIfAborted();
  const source = await volumes.createVolume({ size, name: 'demo-disk' });
  ctx.out.info(`created volume demo-disk (${formatBytes(size)}) in ${ctx.loaded.config.volumeDrivers.file!.options.directory}`);
  await writeRealisticContent(volumes, source.id, size, signal);
  const atFull = await volumes.createSnapshot(source.id, 'demo-at-full');
  const full = await timedBackup(ctx, manager, source.id, false, signal);
  rows.push(backupRow('full backup', full.record, full.ms));

  await changeBlocks(volumes, source.id, size, signal);
  const atIncremental = await volumes.createSnapshot(source.id, 'demo-at-incremental');
  const inc = await timedBackup(ctx, manager, source.id, true, signal);
  rows.push(backupRow('incremental backup', inc.record, inc.ms));

  for (const [label, record, snapshotId] of [
    ['restore of full', full.record, atFull.id],
    ['restore of incremental', inc.record, atIncremental.id],
  ] as const) {
    const t0 = Date.now();
    const { job, volume } = await manager.startRestore({ backupId: record.id, newVolume: { name: `demo-${label.replace(/ /g, '-')}` }, signal });
    await runJob(manager, job, ctx.stateDir, ctx.out, CANCEL_HINT);
    const ms = Date.now() - t0;
    const same = await sameBytes(volumes, { kind: 'snapshot', id: snapshotId }, { kind: 'volume', id: volume.id }, signal);
    rows.push({ step: label, id: volume.id, size: record.size, durationMs: ms, check: same ? 'byte-exact' : 'MISMATCH' });
  }
  return rows;
}

async function timedBackup(ctx: CliContext, manager: BackupManager, volumeId: string, incremental: boolean, signal: AbortSignal) {
  const t0 = Date.now();
  const job = await manager.startBackup({ volumeId, incremental, name: incremental ? 'demo-incremental' : 'demo-full', signal });
  const record = await runJob(manager, job, ctx.stateDir, ctx.out, CANCEL_HINT);
  return { record, ms: Date.now() - t0 };
}

function backupRow(step: string, b: BackupRecord, ms: number): Row {
  return { step, id: b.id, size: b.size, bytesRead: b.stats?.bytesRead, bytesStored: b.stats?.bytesStored, durationMs: ms };
}

/** Per MiB: random (incompressible), text, a repeated block (dedup), or nothing (sparse), in turn. */
async function writeRealisticContent(volumes: VolumeDriver, volumeId: string, size: number, signal: AbortSignal): Promise<void> {
  const a = await volumes.attach({ kind: 'volume', id: volumeId }, 'rw');
  try {
    const repeated = randomBytes(MiB);
    for (let off = 0, i = 0; off < size; off += MiB, i++) {
      signal.throwIfAborted();
      const kind = i % 4;
      if (kind === 0) await a.device.write(off, randomBytes(MiB));
      else if (kind === 1) await a.device.write(off, TEXT.subarray((i * 4096) % 65536, ((i * 4096) % 65536) + MiB));
      else if (kind === 2) await a.device.write(off, repeated);
    }
    await a.device.flush();
  } finally {
    await volumes.detach(a.id);
  }
}

/** Rewrites about 3% of the volume in scattered 64 KiB blocks and zeroes one MiB that held data (the second, or the only one). */
async function changeBlocks(volumes: VolumeDriver, volumeId: string, size: number, signal: AbortSignal): Promise<void> {
  const a = await volumes.attach({ kind: 'volume', id: volumeId }, 'rw');
  try {
    const blocks = size / 65536;
    const n = Math.max(4, Math.floor(blocks * 0.03));
    for (let i = 0; i < n; i++) {
      if (i % 16 === 0) signal.throwIfAborted();
      await a.device.write(((i * 7919) % blocks) * 65536, randomBytes(65536));
    }
    await a.device.writeZeroes(Math.min(MiB, size - MiB), MiB);
    await a.device.flush();
  } finally {
    await volumes.detach(a.id);
  }
}

/** Compares two attachable targets byte for byte, 4 MiB at a time. */
async function sameBytes(volumes: VolumeDriver, x: { kind: 'volume' | 'snapshot'; id: string }, y: { kind: 'volume' | 'snapshot'; id: string }, signal: AbortSignal): Promise<boolean> {
  const a = await volumes.attach(x, 'ro');
  const b = await volumes.attach(y, 'ro');
  try {
    if (a.device.size !== b.device.size) return false;
    for (let off = 0; off < a.device.size; off += 4 * MiB) {
      signal.throwIfAborted();
      const len = Math.min(4 * MiB, a.device.size - off);
      if (!(await a.device.read(off, len)).equals(await b.device.read(off, len))) return false;
    }
    return true;
  } finally {
    await volumes.detach(a.id);
    await volumes.detach(b.id);
  }
}
