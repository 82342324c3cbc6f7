/**
 * `npm run bench:serve [-- --size 2G] [--chunk 128K] [--keep] [--settle 3]`: the benchmark's backups and restore
 * driven through one long-running `cairn serve` (the REST API, docs/api.md), as backup software
 * drives Cairn, instead of one fresh process per operation. Each time is the client's: from the
 * request to the answer of `GET /v1/jobs/:id?wait=` that reports the job's end, so process start,
 * key derivation and the first compilation of the code are paid once, before the first measured
 * request.
 *
 * Same data as `npm run bench` (lib/image.mjs): a full backup, the day of writes, an incremental
 * with changed-block tracking, a restore to a new volume checked byte-exact. Prints the times,
 * the incremental's share of the full backup, and the server's peak RSS (VmHWM: the largest of
 * all its operations). Cairn only; `npm run bench` compares with restic. Writes
 * bench/results/<date>-serve.json.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { beforeOperation, CAIRN_NODE_FLAGS, cairnOpScript, cairnEnv, parseSize, timed } from './lib/measure.mjs';
import { flag, option as opt } from './lib/args.mjs';

/** Cairn's side runs bundled, as the cairn binary does (lib/measure.mjs). */
const CAIRN_OP = await cairnOpScript();

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const size = parseSize(opt('--size', '2G'));
const settle = Number(opt('--settle', '3'));
const PASS_ENV = 'CAIRN_BENCH_PASSPHRASE';
const work = mkdtempSync(join(opt('--dir', tmpdir()), 'cairn-serve-'));
const env = cairnEnv({ ...process.env, [PASS_ENV]: 'bench-passphrase' });
const mbps = (ms) => Math.round(size / 1e6 / (ms / 1000));

// Setup (not measured) in processes of their own, as in `npm run bench`.
const op = (name, ...a) => timed(process.execPath, [...CAIRN_NODE_FLAGS, CAIRN_OP, name, work, ...a], { cwd: root, env }).out;
op('prepare', String(size), '--no-raw');
op('init', '--encrypt', ...(opt('--chunk') ? ['--chunk', String(parseSize(opt('--chunk')))] : [])); // cairn-op's passphrase is the one in env[PASS_ENV]
const { volumeId } = JSON.parse(readFileSync(join(work, 'state.json'), 'utf8'));
const config = join(work, 'cairn.config.json');
writeFileSync(
  config,
  JSON.stringify({
    version: 1,
    stateDir: 'state',
    volumeDrivers: { file: { plugin: 'file', options: { directory: 'volumes' } } },
    targets: { posix: { plugin: 'posix', options: { directory: 'repo', repository: { passphrase: `env:${PASS_ENV}` } } } },
  }),
);

console.log(`work dir ${work}; image ${size / 2 ** 30} GiB; ${availableParallelism()} cores; encrypted, zstd, ${opt('--chunk', 'default')} chunks; one cairn serve for every operation; ${settle} s of quiet before each`);
const server = spawn(join(root, 'packages/cli/bin/cairn.js'), ['serve', '--listen', '127.0.0.1:0', '--json', '--quiet', '--config', config], { cwd: work, env, stdio: ['ignore', 'pipe', 'inherit'] });
const base = await new Promise((resolve, reject) => {
  createInterface({ input: server.stdout }).on('line', (line) => {
    try {
      const doc = JSON.parse(line);
      if (doc.listening) resolve(doc.listening);
    } catch {
      // not the listening line
    }
  });
  server.once('exit', (code) => reject(new Error(`cairn serve exited with ${code} before listening`)));
});

async function call(method, path, body) {
  const res = await fetch(`${base}${path}`, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
  const doc = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(doc)}`);
  return doc;
}

/** Starts a job (`POST path body`) and waits for its end; milliseconds from request to answer. */
async function job(path, body) {
  beforeOperation({ measured: true, settle });
  const t0 = performance.now();
  let view = await call('POST', path, body);
  while (view.state === 'running') view = await call('GET', `/v1/jobs/${view.id}?wait=60`);
  const ms = Math.round(performance.now() - t0);
  if (view.state !== 'succeeded') throw new Error(`job ${view.id} ${view.state}: ${JSON.stringify(view.error)}`);
  return { ms, view };
}

const peakRss = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'))[1]) / 1024;
try {
  op('digest', 'full');
  const full = await job('/v1/backups', { volumeId, name: 'full' });
  op('modify');
  op('digest', 'incremental');
  const cbt = await job('/v1/backups', { volumeId, name: 'incremental', incremental: true });
  const restore = await job(`/v1/backups/${cbt.view.result.id}/restore`, { newVolume: { name: 'restored' } });
  const restoredId = restore.view.result.volume.id;
  const state = JSON.parse(readFileSync(join(work, 'state.json'), 'utf8'));
  writeFileSync(join(work, 'state.json'), JSON.stringify({ ...state, restored: { incremental: restoredId } }));
  const rss = Math.round(peakRss());
  const check = op('check', 'incremental');
  const stats = (v) => v.result?.stats;
  console.log('\n| operation (through cairn serve) | ms | MB/s of image |');
  console.log('|---|---|---|');
  console.log(`| full backup | ${full.ms} | ${mbps(full.ms)} |`);
  console.log(`| incremental, changed-block tracking | ${cbt.ms} | ${mbps(cbt.ms)} |`);
  console.log(`| restore (the incremental, to a new volume) | ${restore.ms} | ${mbps(restore.ms)} |`);
  console.log(`\nCBT incremental took ${((cbt.ms / full.ms) * 100).toFixed(1)}% of the full backup's time; server peak RSS (all operations) ${rss} MiB; restore byte-exact: ${check.exact}`);
  console.log(`stats: full ${JSON.stringify(stats(full.view))}\n       incremental ${JSON.stringify(stats(cbt.view))}`);
  mkdirSync(join(here, 'results'), { recursive: true });
  const file = join(here, 'results', `${new Date().toISOString().slice(0, 19).replaceAll(':', '')}-serve.json`);
  writeFileSync(file, JSON.stringify({ size, chunk: opt('--chunk') ?? 'default', cores: availableParallelism(), settle, fullMs: full.ms, cbtMs: cbt.ms, restoreMs: restore.ms, peakRssMiB: rss, exact: check.exact, full: full.view, incremental: cbt.view }, null, 2));
  console.log(`results: ${file}`);
  if (!check.exact) process.exitCode = 1;
} finally {
  server.kill('SIGTERM');
  await new Promise((r) => server.once('exit', r));
  if (!flag('--keep')) rmSync(work, { recursive: true, force: true });
}
