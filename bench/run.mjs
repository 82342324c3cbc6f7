/**
 * `npm run bench [-- --size 2G] [--keep] [--plain] [--cold] [--settle 3] [--unbundled] [--no-borg]`: Cairn, restic
 * and BorgBackup side by side, same run, same data (see lib/image.mjs). Each operation runs in its own process under /usr/bin/time, which
 * gives elapsed time and peak RSS for both. Prints a table and writes bench/results/<date>.json.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CAIRN_NODE_FLAGS, cairnOpScript, cairnEnv, parseSize, timed as measure } from './lib/measure.mjs';
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
const restic = (...a) => timed('restic', ['--no-cache', ...a], work, env, MEASURED.has(a[0]));
const borg = (cwd, ...a) => timed('borg', a, cwd, borgEnv, a[0] === 'create' || a[0] === 'extract');
// The posix store's space reserve (`@reserve`, made at init) is room set aside, not stored data.
const du = (p) => Number(execFileSync('du', ['-sb', '--exclude=@reserve', p], { encoding: 'utf8' }).split('\t')[0]);
const duDisk = (p) => Number(execFileSync('du', ['-sB1', p], { encoding: 'utf8' }).split('\t')[0]);
const mbps = (s) => Math.round(size / 1e6 / s);

console.log(`work dir ${work}; image ${size / 2 ** 30} GiB; ${availableParallelism()} cores; Cairn ${encrypt ? 'encrypted (AES-256-GCM)' : 'unencrypted'}, zstd, ${flag('--unbundled') ? 'unbundled (ES modules)' : 'bundled as the cairn binary'}; restic ${execFileSync('restic', ['version'], { encoding: 'utf8' }).trim()};${withBorg ? ` ${execFileSync('borg', ['--version'], { encoding: 'utf8' }).trim()};` : ''} ${cold ? 'page cache dropped' : 'page cache left warm'} and ${settle} s of quiet before every measured operation`);
cairn('prepare', String(size));
const changed = cairn('modify').out; // measure the twin's delta size once, then rebuild the base
rmSync(join(work, 'volumes'), { recursive: true, force: true });
rmSync(join(work, 'image.raw'), { force: true });
cairn('prepare', String(size));
cairn('init', ...(encrypt ? ['--encrypt'] : []), ...(opt('--chunk') ? ['--chunk', String(parseSize(opt('--chunk')))] : []));
restic('init');
if (withBorg) borg(work, 'init', '--encryption=repokey-blake2');

const rows = [];
cairn('digest', 'full');
const c1 = cairn('backup', 'full');
const stored1 = du(join(work, 'repo'));
const r1 = restic('backup', 'image.raw');
const rstored1 = du(join(work, 'restic'));
const b1 = withBorg ? borg(work, 'create', '--compression', 'zstd,1', '::full', 'image.raw') : undefined;
const bstored1 = withBorg ? du(join(work, 'borg')) : undefined;
rows.push(['full backup', c1, r1, stored1, rstored1, b1, bstored1]);

cairn('modify');
cairn('digest', 'incremental');
const c2 = cairn('backup', 'incremental', '--incremental');
const stored2 = du(join(work, 'repo')) - stored1;
const c3 = cairn('backup', 'incremental-nocbt', '--incremental', '--no-cbt');
const stored3 = du(join(work, 'repo')) - stored1 - stored2;
const r2 = restic('backup', 'image.raw');
const rstored2 = du(join(work, 'restic')) - rstored1;
const b2 = withBorg ? borg(work, 'create', '--compression', 'zstd,1', '::incremental', 'image.raw') : undefined;
const bstored2 = withBorg ? du(join(work, 'borg')) - bstored1 : undefined;
rows.push(['incremental, changed-block tracking', c2, undefined, stored2, undefined]);
rows.push(['incremental, no tracking (read all)', c3, r2, stored3, rstored2, b2, bstored2]);

const c4 = cairn('restore', 'full');
Object.assign(c4.out, cairn('check', 'full').out);
const phases = cairn('restore-phases', 'full').out;
mkdirSync(join(work, 'restic-restore'));
const r4 = restic('restore', 'latest', '--target', join(work, 'restic-restore'));
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
}
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
console.log(`\nbytes changed by the day of writes: ${MiB(changed.bytesChanged)}; CBT incremental took ${((c2.seconds / c1.seconds) * 100).toFixed(1)}% of the full backup's time and stored ${(stored2 / changed.bytesChanged).toFixed(2)}× the changed bytes`);
console.log(`restic's restore with its writes synced (sync right after it: ${resticSyncSeconds.toFixed(2)} s): ${mbps(r4.seconds + resticSyncSeconds)} MB/s; Cairn/restic ${((r4.seconds + resticSyncSeconds) / c4.seconds).toFixed(2)}×`);
if (withBorg) console.log(`borg's restore with its writes synced (sync right after it: ${borgSyncSeconds.toFixed(2)} s): ${mbps(b4.seconds + borgSyncSeconds)} MB/s; Cairn/borg ${((b4.seconds + borgSyncSeconds) / c4.seconds).toFixed(2)}×; borg's restore allocates ${MiB(borgRestoredDisk)}`);
console.log(`restores byte-exact: ${c4.out.exact}; restored volume allocates ${MiB(c4.out.allocatedBytes)} of ${MiB(size)} (restic 0.14 restores without holes: ${MiB(resticRestoredDisk)})`);
console.log(`Cairn in-process times (ms, excluding process start and key derivation): full ${c1.out.ms}, incremental ${c2.out.ms}, no-cbt ${c3.out.ms}, restore ${c4.out.ms} (CPU: ${c4.out.cpuMs.user} ms user, ${c4.out.cpuMs.system} ms system)`);
console.log(`Cairn restore phases (a second restore; packs are read with O_DIRECT, as in the first): copy ${phases.copyMs} ms (${mbps(phases.copyMs / 1000)} MB/s of image), final fdatasync ${phases.flushMs} ms`);
console.log(`Cairn stats: full ${JSON.stringify(c1.out.stats)}\n             incremental ${JSON.stringify(c2.out.stats)}\n             no-cbt ${JSON.stringify(c3.out.stats)}`);
mkdirSync(join(here, 'results'), { recursive: true });
const file = join(here, 'results', `${new Date().toISOString().slice(0, 19).replaceAll(':', '')}-${size / 2 ** 30}G.json`);
writeFileSync(file, JSON.stringify({ size, cores: availableParallelism(), encrypt, cold, settle, phases, resticRestoreSyncSeconds: resticSyncSeconds, borgRestoreSyncSeconds: borgSyncSeconds, rows: rows.map(([name, c, r, cs, rs, b, bs]) => ({ name, cairn: { ...c, stored: cs }, restic: r && { ...r, stored: rs }, borg: b && { ...b, stored: bs } })), changed }, null, 2));
console.log(`results: ${file}`);
if (!flag('--keep')) rmSync(work, { recursive: true, force: true });
if (!c4.out.exact) process.exit(1);
