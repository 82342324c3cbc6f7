/**
 * `npm run bench [-- --size 2G] [--keep] [--plain] [--cold] [--settle 3] [--unbundled] [--no-borg] [--results <dir>] [--write-align 4K]`:
 * Cairn, restic and BorgBackup side by side, same run, same data (see lib/image.mjs). Each operation runs in its own
 * process under /usr/bin/time, which gives elapsed time and peak RSS for both. Before printing anything it checks
 * that every tool was given the same bytes and that every restore is byte-exact (Cairn's also sparse), and exits
 * non-zero if not. Prints a table and writes <results>/<date>.json (default bench/results).
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CAIRN_NODE_FLAGS, cairnOpScript, cairnEnv, parseSize, timed as measure } from './lib/measure.mjs';
import { BLOCK, RUN, runKinds } from './lib/image.mjs';
import { flag, option as opt } from './lib/args.mjs';

/** Cairn's side runs bundled, as the cairn binary does (lib/measure.mjs). */
const CAIRN_OP = await cairnOpScript({ bundled: !flag('--unbundled') });

const here = dirname(fileURLToPath(import.meta.url));
const size = parseSize(opt('--size', '2G'));
const encrypt = !flag('--plain');
const work = mkdtempSync(join(opt('--dir', tmpdir()), 'cairn-bench-'));
const env = { ...process.env, RESTIC_PASSWORD: 'bench-passphrase', RESTIC_REPOSITORY: join(work, 'restic'), RESTIC_CACHE_DIR: join(work, 'restic-cache') };
// BorgBackup (Debian's 1.2), the design's second peer: an encrypted repository (repokey-blake2:
// AES-256-CTR with a BLAKE2b MAC), zstd level 1 as Cairn's, its own content-defined chunker.
// `--no-borg` leaves it out.
const withBorg = !flag('--no-borg');
const borgEnv = { ...process.env, BORG_PASSPHRASE: 'bench-passphrase', BORG_REPO: join(work, 'borg'), BORG_BASE_DIR: join(work, 'borg-home') };

// `--cold`: every measured operation starts with the page cache dropped (needs root), as for a
// backup or restore run long after the last one. By default caches stay warm, which favours
// whichever tool left its files there: restic writes its packs through the page cache, Cairn with
// O_DIRECT, so restic's restore reads its repository from memory and Cairn's from the disk.
const cold = flag('--cold');
if (cold && !canDropCaches()) throw new Error('--cold needs write access to /proc/sys/vm/drop_caches (root)');
function canDropCaches() {
  try {
    accessSync('/proc/sys/vm/drop_caches', constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

// Seconds of quiet before each measured operation (`--settle`), for both tools: `sync` returns
// once the guest has handed its writes to the virtual disk, while the host may still be writing
// them, and the next operation should not pay for that.
const settle = Number(opt('--settle', '3'));

const timed = (cmd, args, cwd = work, processEnv = env, measured = false) => measure(cmd, args, { cwd, env: processEnv, measured, cold, settle });
const NODE_FLAGS = CAIRN_NODE_FLAGS;
const CAIRN_ENV = cairnEnv(env);
/** The operations in the table; the others (prepare, digest, check…) set them up and check them. */
const MEASURED = new Set(['backup', 'restore']);
const cairn = (...a) => timed(process.execPath, [...NODE_FLAGS, CAIRN_OP, ...a.slice(0, 1), work, ...a.slice(1)], join(here, '..'), CAIRN_ENV, MEASURED.has(a[0]));
// restic: repository format 2, compression `auto` (zstd, its default) stated rather than left to
// defaults; always encrypted (AES-256-CTR with Poly1305-AES); no local cache (`--no-cache`).
const restic = (...a) => timed('restic', ['--no-cache', '--compression', 'auto', ...a], work, env, MEASURED.has(a[0]));
const borg = (cwd, ...a) => timed('borg', a, cwd, borgEnv, a[0] === 'create' || a[0] === 'extract');
// The posix store's space reserve (`@reserve`, made at init) is room set aside, not stored data.
const du = (p) => Number(execFileSync('du', ['-sb', '--exclude=@reserve', p], { encoding: 'utf8' }).split('\t')[0]);
const duDisk = (p) => Number(execFileSync('du', ['-sB1', p], { encoding: 'utf8' }).split('\t')[0]);
const mbps = (s) => Math.round(size / 1e6 / s);
const sha256 = (p) => execFileSync('sha256sum', [p], { encoding: 'utf8' }).split(' ')[0];
const state = () => JSON.parse(readFileSync(join(work, 'state.json'), 'utf8'));
/** Throws (so the run exits non-zero, before any table) unless `ok`. */
const expect = (ok, what) => {
  if (!ok) throw new Error(`bench check failed: ${what}`);
};
/** The image's bytes outside its zero runs: what a sparse restore of the full backup allocates. */
const dataBytes = runKinds(size).reduce((n, kind, i) => n + (kind === 'zero' ? 0 : Math.min(RUN, size - i * RUN)), 0);

console.log(`work dir ${work}; image ${size / 2 ** 30} GiB; ${availableParallelism()} cores; Cairn ${encrypt ? 'encrypted (AES-256-GCM)' : 'unencrypted'}, zstd, ${flag('--unbundled') ? 'unbundled (ES modules)' : 'bundled as the cairn binary'}; restic ${execFileSync('restic', ['version'], { encoding: 'utf8' }).trim()} (repository v2, encrypted, --compression auto, --no-cache);${withBorg ? ` ${execFileSync('borg', ['--version'], { encoding: 'utf8' }).trim()};` : ''} ${cold ? 'page cache dropped' : "page cache left warm (restores are not like for like then: restic's reads its packs from the cache, Cairn's with O_DIRECT from the disk; --cold for that)"} and ${settle} s of quiet before every measured operation`);
cairn('prepare', String(size));
const writeAlign = opt('--write-align') ? parseSize(opt('--write-align')) : BLOCK;
const modify = () => cairn('modify', '--write-align', String(writeAlign));
const changed = modify().out; // measure the twin's delta size once, then rebuild the base
rmSync(join(work, 'volumes'), { recursive: true, force: true });
rmSync(join(work, 'image.raw'), { force: true });
cairn('prepare', String(size));
cairn('init', ...(encrypt ? ['--encrypt'] : []), ...(opt('--chunk') ? ['--chunk', String(parseSize(opt('--chunk')))] : []));
restic('init', '--repository-version', '2');
if (withBorg) borg(work, 'init', '--encryption=repokey-blake2');

const rows = [];
cairn('digest', 'full');
// Same data: restic and borg back up image.raw, Cairn the volume; they must hold the same bytes.
expect(sha256(join(work, 'image.raw')) === state().digests.full, "image.raw differs from Cairn's volume");
const c1 = cairn('backup', 'full');
const stored1 = du(join(work, 'repo'));
// The no-tracking incremental runs against a copy of the repository as it is now, so that it has
// to store the day's changes itself: run after the tracked one in the same repository, it would
// find them all stored already (and store nothing, write nothing) while restic's stores them.
const nocbtRepo = join(work, 'repo-nocbt');
execFileSync('cp', ['-a', join(work, 'repo'), nocbtRepo]);
const nocbtStored0 = du(nocbtRepo);
const r1 = restic('backup', '--tag', 'full', 'image.raw');
const rstored1 = du(join(work, 'restic'));
const b1 = withBorg ? borg(work, 'create', '--compression', 'zstd,1', '::full', 'image.raw') : undefined;
const bstored1 = withBorg ? du(join(work, 'borg')) : undefined;
rows.push(['full backup', c1, r1, stored1, rstored1, b1, bstored1]);

modify();
cairn('digest', 'incremental');
expect(sha256(join(work, 'image.raw')) === state().digests.incremental, "image.raw differs from Cairn's volume after the day of writes");
const c2 = cairn('backup', 'incremental', '--incremental');
const stored2 = du(join(work, 'repo')) - stored1;
const c3 = cairn('backup', 'incremental-nocbt', '--incremental', '--no-cbt', '--repo', nocbtRepo);
const stored3 = du(nocbtRepo) - nocbtStored0;
const r2 = restic('backup', '--tag', 'incremental', 'image.raw');
const rstored2 = du(join(work, 'restic')) - rstored1;
const b2 = withBorg ? borg(work, 'create', '--compression', 'zstd,1', '::incremental', 'image.raw') : undefined;
const bstored2 = withBorg ? du(join(work, 'borg')) - bstored1 : undefined;
rows.push(['incremental, changed-block tracking', c2, undefined, stored2, undefined]);
rows.push(['incremental, no tracking (read all)', c3, r2, stored3, rstored2, b2, bstored2]);

const c4 = cairn('restore', 'full');
Object.assign(c4.out, cairn('check', 'full').out);
expect(c4.out.exact === true, "Cairn's restore is not byte-exact");
// Sparse: the zero runs stay holes (a little slack for the file system's rounding).
expect(c4.out.allocatedBytes <= dataBytes + 2 ** 20, `Cairn's restore is not sparse: allocates ${c4.out.allocatedBytes} bytes, the image has ${dataBytes} of data`);
const phases = cairn('restore-phases', 'full').out;
mkdirSync(join(work, 'restic-restore'));
// The full backup's snapshot, as Cairn and borg restore (`latest` alone would be the incremental).
const r4 = restic('restore', 'latest', '--tag', 'full', '--target', join(work, 'restic-restore'));
expect(sha256(join(work, 'restic-restore', 'image.raw')) === state().digests.full, "restic's restore is not byte-exact");
// restic's and borg's restores return with their writes in the page cache; Cairn's returns once
// they are on disk (fdatasync). The time of a `sync` taken right after puts them on one footing.
const syncSeconds = () => {
  const t = performance.now();
  execFileSync('sync');
  return (performance.now() - t) / 1000;
};
const resticSyncSeconds = syncSeconds();
const resticRestoredDisk = duDisk(join(work, 'restic-restore'));
// borg extracts into its working directory; `--sparse` makes holes of zero runs, as Cairn does.
let b4, borgSyncSeconds, borgRestoredDisk;
if (withBorg) {
  mkdirSync(join(work, 'borg-restore'));
  b4 = borg(join(work, 'borg-restore'), 'extract', '--sparse', '::full');
  borgSyncSeconds = syncSeconds();
  borgRestoredDisk = duDisk(join(work, 'borg-restore'));
  expect(sha256(join(work, 'borg-restore', 'image.raw')) === state().digests.full, "borg's restore is not byte-exact");
}
// The row times restic's and borg's restores as they return, their writes still in the page
// cache; Cairn's returns once its writes are on disk (fdatasync). The lines below the table give
// them with the sync taken right after them (the same work as Cairn's).
rows.push(['restore (full)', c4, r4, c4.out.allocatedBytes, resticRestoredDisk, b4, borgRestoredDisk]);

const fmt = (n) => (n === undefined ? '—' : String(n));
const MiB = (b) => (b === undefined ? '—' : `${(b / 2 ** 20).toFixed(1)} MiB`);
console.log(`\n| operation | Cairn MB/s | Cairn peak RSS | Cairn stored | restic MB/s | restic peak RSS | restic stored | Cairn/restic speed |${withBorg ? ' borg MB/s | borg peak RSS | borg stored | Cairn/borg speed |' : ''}`);
console.log(`|---|---|---|---|---|---|---|---|${withBorg ? '---|---|---|---|' : ''}`);
for (const [name, c, r, cs, rs, b, bs] of rows) {
  const ratio = r ? (r.seconds / c.seconds).toFixed(2) : '—';
  const borgCells = withBorg ? ` ${b ? mbps(b.seconds) : '—'} | ${b ? `${b.rssMiB} MiB` : '—'} | ${MiB(bs)} | ${b ? (b.seconds / c.seconds).toFixed(2) : '—'}× |` : '';
  console.log(`| ${name} | ${mbps(c.seconds)} | ${c.rssMiB} MiB | ${MiB(cs)} | ${r ? mbps(r.seconds) : '—'} | ${r ? `${r.rssMiB} MiB` : '—'} | ${MiB(rs)} | ${ratio}× |${borgCells}`);
}
console.log(`\nbytes changed by the day of writes (64 KiB writes at multiples of ${writeAlign / 1024} KiB): ${MiB(changed.bytesChanged)}; CBT incremental took ${((c2.seconds / c1.seconds) * 100).toFixed(1)}% of the full backup's time and stored ${(stored2 / changed.bytesChanged).toFixed(2)}× the changed bytes`);
console.log(`restic's restore with its writes synced (sync right after it: ${resticSyncSeconds.toFixed(2)} s): ${mbps(r4.seconds + resticSyncSeconds)} MB/s; Cairn/restic ${((r4.seconds + resticSyncSeconds) / c4.seconds).toFixed(2)}×`);
if (withBorg) console.log(`borg's restore with its writes synced (sync right after it: ${borgSyncSeconds.toFixed(2)} s): ${mbps(b4.seconds + borgSyncSeconds)} MB/s; Cairn/borg ${((b4.seconds + borgSyncSeconds) / c4.seconds).toFixed(2)}×; borg's restore allocates ${MiB(borgRestoredDisk)}`);
console.log(`restores checked byte-exact (SHA-256 against the full image): Cairn, restic${withBorg ? ', borg' : ''}; Cairn's restored volume allocates ${MiB(c4.out.allocatedBytes)} of ${MiB(size)} (${MiB(dataBytes)} of data; restic 0.14 restores without holes: ${MiB(resticRestoredDisk)})`);
console.log("the no-tracking incremental ran against a copy of the repository taken after the full backup, so it stored the day's changes itself");
console.log(`Cairn in-process times (ms, excluding process start and key derivation): full ${c1.out.ms}, incremental ${c2.out.ms}, no-cbt ${c3.out.ms}, restore ${c4.out.ms} (CPU: ${c4.out.cpuMs.user} ms user, ${c4.out.cpuMs.system} ms system)`);
console.log(`Cairn restore phases (a second restore; packs are read with O_DIRECT, as in the first): copy ${phases.copyMs} ms (${mbps(phases.copyMs / 1000)} MB/s of image), final fdatasync ${phases.flushMs} ms`);
console.log(`Cairn stats: full ${JSON.stringify(c1.out.stats)}\n             incremental ${JSON.stringify(c2.out.stats)}\n             no-cbt ${JSON.stringify(c3.out.stats)}`);
const resultsDir = opt('--results', join(here, 'results'));
mkdirSync(resultsDir, { recursive: true });
const file = join(resultsDir, `${new Date().toISOString().slice(0, 19).replaceAll(':', '')}-${size / 2 ** 30}G.json`);
writeFileSync(file, JSON.stringify({ size, dataBytes, writeAlign, cores: availableParallelism(), encrypt, cold, settle, phases, resticRestoreSyncSeconds: resticSyncSeconds, borgRestoreSyncSeconds: borgSyncSeconds, rows: rows.map(([name, c, r, cs, rs, b, bs]) => ({ name, cairn: { ...c, stored: cs }, restic: r && { ...r, stored: rs }, borg: b && { ...b, stored: bs } })), changed }, null, 2));
console.log(`results: ${file}`);
if (!flag('--keep')) rmSync(work, { recursive: true, force: true });
