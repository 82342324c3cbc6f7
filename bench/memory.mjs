/**
 * `npm run bench:memory [-- --size 2G] [--volumes 2G,64G,1T] [--keep]`: does Cairn's memory
 * follow the volume's size or only its data? The same realistic image (lib/image.mjs, `--size`)
 * is placed at the start of volumes of each size in `--volumes`, the rest never written (holes),
 * and backed up (full, then an incremental with changed-block tracking after the day of writes)
 * and restored, each operation in its own process under /usr/bin/time. The data, and so the
 * repository and its index, are the same for every volume size; what differs is the number of
 * chunks the volume has (8 million for 1 TiB at 128 KiB). Cairn only: restic would read every
 * byte of the holes. Writes bench/results/<date>-memory.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CAIRN_NODE_FLAGS, cairnOpScript, cairnEnv, parseSize, timed } from './lib/measure.mjs';
import { flag, option as opt } from './lib/args.mjs';

/** Cairn's side runs bundled, as the cairn binary does (lib/measure.mjs). */
const CAIRN_OP = await cairnOpScript();

const here = dirname(fileURLToPath(import.meta.url));
const size = parseSize(opt('--size', '2G'));
const volumeSizes = opt('--volumes', '2G,64G,1T').split(',').map(parseSize);
const settle = Number(opt('--settle', '3'));
const env = cairnEnv(process.env);
const GiB = 2 ** 30;
const label = (b) => (b >= 2 ** 40 ? `${b / 2 ** 40} TiB` : `${b / GiB} GiB`);

console.log(`image ${label(size)} at the start of volumes of ${volumeSizes.map(label).join(', ')}; ${availableParallelism()} cores; encrypted, zstd; ${settle} s of quiet before every measured operation`);
const results = [];
for (const volumeSize of volumeSizes) {
  const work = mkdtempSync(join(opt('--dir', tmpdir()), 'cairn-memory-'));
  const cairn = (op, ...a) => timed(process.execPath, [...CAIRN_NODE_FLAGS, CAIRN_OP, op, work, ...a], { cwd: join(here, '..'), env, measured: op === 'backup' || op === 'restore', settle });
  try {
    cairn('prepare', String(size), '--volume', String(volumeSize), '--no-raw');
    cairn('init', '--encrypt');
    cairn('digest', 'full');
    const full = cairn('backup', 'full');
    cairn('modify');
    cairn('digest', 'incremental');
    const cbt = cairn('backup', 'incremental', '--incremental');
    const restore = cairn('restore', 'incremental');
    const check = cairn('check', 'incremental').out;
    results.push({ volumeSize, full, cbt, restore, exact: check.exact });
    console.log(`${label(volumeSize)}: done (restore byte-exact, no data past the image: ${check.exact})`);
  } finally {
    if (!flag('--keep')) rmSync(work, { recursive: true, force: true });
  }
}

console.log('\n| volume | chunks | full backup | RSS | CBT incremental | RSS | restore | RSS |');
console.log('|---|---|---|---|---|---|---|---|');
const chunks = (v) => Math.ceil(v / (128 * 1024)).toLocaleString('en');
for (const r of results) {
  const cell = (m) => `${m.seconds.toFixed(2)} s (${m.out.ms} ms in-process) | ${m.rssMiB} MiB`;
  console.log(`| ${label(r.volumeSize)} | ${chunks(r.volumeSize)} | ${cell(r.full)} | ${cell(r.cbt)} | ${cell(r.restore)} |`);
}
mkdirSync(join(here, 'results'), { recursive: true });
const file = join(here, 'results', `${new Date().toISOString().slice(0, 19).replaceAll(':', '')}-memory.json`);
writeFileSync(file, JSON.stringify({ size, cores: availableParallelism(), settle, results }, null, 2));
console.log(`results: ${file}`);
if (results.some((r) => !r.exact)) process.exit(1);
