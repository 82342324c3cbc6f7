/**
 * `node bench/serve-soak.mjs [--cycles 60] [--size 4M] [--keep-jobs 20] [--every 10] [--keep]`:
 * one `cairn serve` (the built bundle, packages/cli/bin/cairn.js) driven through many jobs and bad
 * requests, watching whether it leaks. Not a test: it prints figures to read.
 *
 * Each cycle: a full backup of volume `src`, an incremental, a restore of the incremental to a new
 * volume, a verify of the full backup, then the new volume, the incremental and the full backup
 * deleted (4 jobs); every 5th cycle also a volume made with `cairn volume create` and deleted
 * through the API. And bad requests: unknown job, volume and backup ids, malformed JSON, a body
 * over the 1 MiB limit, a connection dropped mid-body, long-polls abandoned (on a running job and
 * on an ended one), a cancel of an unknown job. Also per cycle: a backup cancelled at once with 20
 * long-polls of it answered at its end, a backup set to `error` by a reset-state job (3 jobs);
 * every 10th cycle a gc job and 50 idle connections opened and dropped.
 *
 * Every `--every` cycles, and once more after a quiet pause at the end, it samples the server
 * from /proc/<pid>: open fds, threads, RSS (VmRSS) and VmHWM, plus the files and bytes of the state
 * dir and the repository, the volume driver's files, the length of `GET /v1/jobs` (bounded by
 * `--keep-jobs`) and of `GET /v1/volumes`. The work
 * dir is a new temporary one (removed unless `--keep`), never the repository's.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { flag, option as opt } from './lib/args.mjs';
import { parseSize } from './lib/measure.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cairn = join(root, 'packages/cli/bin/cairn.js');
const cycles = Number(opt('--cycles', '60'));
const every = Number(opt('--every', '10'));
const size = parseSize(opt('--size', '4M'));
const keepJobs = opt('--keep-jobs', '20');
const work = mkdtempSync(join(tmpdir(), 'cairn-soak-'));
const config = join(work, 'cairn.config.json');
writeFileSync(
  config,
  JSON.stringify({
    version: 1,
    stateDir: 'state',
    volumeDrivers: { file: { plugin: 'file', options: { directory: 'volumes' } } },
    targets: { posix: { plugin: 'posix', options: { directory: 'repo', repository: { init: true } } } },
  }),
);
const cli = (...args) => JSON.parse(execFileSync(cairn, ['--json', '--config', config, ...args], { cwd: work, encoding: 'utf8' }));
writeFileSync(join(work, 'src.raw'), randomBytes(size));
cli('volume', 'import', join(work, 'src.raw'), '--name', 'src');
const src = 'src'; // a unique name stands for the volume

const server = spawn(cairn, ['serve', '--listen', '127.0.0.1:0', '--json', '--quiet', '--keep-jobs', keepJobs, '--recover-interval', '5', '--config', config], {
  cwd: work,
  stdio: ['ignore', 'pipe', 'inherit'],
});
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
const { port } = new URL(base);
// The server never outlives this script, whatever ends it.
process.on('exit', () => server.kill('SIGKILL'));

async function call(method, path, body, expect = [200, 201, 202]) {
  const res = await fetch(`${base}${path}`, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
  const doc = await res.json();
  if (!expect.includes(res.status)) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(doc)}`);
  return doc;
}

async function job(path, body) {
  let view = await call('POST', path, body);
  // Every other job: a long-poll abandoned while it runs first.
  if (view.state === 'running') await abandonedPoll(view.id, 30);
  while (view.state === 'running') view = await call('GET', `/v1/jobs/${view.id}?wait=60`);
  if (view.state !== 'succeeded') throw new Error(`job ${view.id} ${view.state}: ${JSON.stringify(view.error)}`);
  return view.result;
}

/** `GET /v1/jobs/:id?wait=` whose client goes away after a few milliseconds. */
async function abandonedPoll(id, wait) {
  const controller = new AbortController();
  const poll = fetch(`${base}/v1/jobs/${id}?wait=${wait}`, { signal: controller.signal }).then(
    (r) => r.text(),
    () => {},
  );
  await new Promise((r) => setTimeout(r, 5));
  controller.abort();
  await poll;
}

/** Writes `text` on a new connection, then either waits for the answer or drops the connection. */
function raw(text, { drop = false } = {}) {
  return new Promise((resolve) => {
    const socket = connect(Number(port), '127.0.0.1', () => {
      socket.write(text);
      if (drop) setTimeout(() => socket.destroy(), 5);
    });
    socket.on('data', () => {});
    socket.on('close', resolve);
    socket.on('error', () => {});
    if (!drop) socket.end();
  });
}

async function badRequests(i) {
  const unknown = '00000000-0000-4000-8000-00000000000' + (i % 10);
  await call('GET', `/v1/jobs/${unknown}`, undefined, [404]);
  await call('GET', `/v1/jobs/${unknown}?wait=5`, undefined, [404]);
  await call('DELETE', `/v1/jobs/${unknown}`, undefined, [404]);
  await call('GET', `/v1/volumes/${unknown}`, undefined, [404]);
  await call('GET', `/v1/backups/${unknown}`, undefined, [404]);
  await call('DELETE', `/v1/backups/${unknown}`, undefined, [404]);
  await call('POST', `/v1/backups/${unknown}/restore`, { newVolume: {} }, [404]);
  let r = await fetch(`${base}/v1/backups`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"volumeId": ' });
  if (r.status !== 400) throw new Error(`malformed JSON: ${r.status}`);
  await r.text();
  r = await fetch(`${base}/v1/backups`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: `{"volumeId":"${'x'.repeat(2 * 2 ** 20)}"}` }).catch(() => undefined);
  if (r && r.status !== 413) throw new Error(`oversized body: ${r.status}`);
  await r?.text();
  // Body announced, half sent, connection dropped; and headers cut short.
  await raw(`POST /v1/backups HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"volumeId":`, { drop: true });
  await raw(`GET /v1/jobs HTTP/1.1\r\nHost: 127.0`, { drop: true });
  await raw('NOT HTTP AT ALL\r\n\r\n');
}

const pid = server.pid;
const procStatus = () => Object.fromEntries(readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').filter(Boolean).map((l) => l.split(/:\s+/)));
function dirUsage(dir) {
  let bytes = 0;
  let files = 0;
  if (!existsSync(dir)) return { bytes, files }; // made by the first operation that needs it
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    files++;
    bytes += statSync(join(e.parentPath, e.name)).size;
  }
  return { bytes, files };
}
const samples = [];
async function sample(label) {
  const s = procStatus();
  const state = dirUsage(join(work, 'state'));
  const repo = dirUsage(join(work, 'repo'));
  const volumes = dirUsage(join(work, 'volumes'));
  const jobs = (await call('GET', '/v1/jobs')).length;
  const row = {
    label,
    fds: readdirSync(`/proc/${pid}/fd`).length,
    threads: Number(s.Threads),
    rssKiB: parseInt(s.VmRSS, 10),
    hwmKiB: parseInt(s.VmHWM, 10),
    stateFiles: state.files,
    stateBytes: state.bytes,
    repoFiles: repo.files,
    repoBytes: repo.bytes,
    volumeFiles: volumes.files,
    jobs,
    volumes: (await call('GET', '/v1/volumes')).length,
  };
  samples.push(row);
  console.log(Object.values(row).join('\t'));
}

console.log(`work dir ${work}; ${cycles} cycles, volume ${size} bytes, --keep-jobs ${keepJobs}, server pid ${pid}`);
console.log(['after', 'fds', 'threads', 'rssKiB', 'hwmKiB', 'stateFiles', 'stateBytes', 'repoFiles', 'repoBytes', 'volumeFiles', 'jobs', 'volumes'].join('\t'));
await sample('start');
let jobsRun = 0;
let badRun = 0;
const t0 = performance.now();
try {
  for (let i = 1; i <= cycles; i++) {
    // The volume does not change: the incremental stores no new data (this measures the server, not the data path).
    const full = await job('/v1/backups', { volumeId: src, name: `full-${i}` });
    const incr = await job('/v1/backups', { volumeId: src, name: `incr-${i}`, incremental: true });
    const restored = await job(`/v1/backups/${incr.id}/restore`, { newVolume: { name: `copy-${i}` } });
    await job(`/v1/backups/${full.id}/verify`);
    jobsRun += 4;
    await abandonedPoll(full.id, 30); // an ended job: answered at once
    await call('DELETE', `/v1/volumes/${restored.volume.id}`);
    await call('DELETE', `/v1/backups/${incr.id}`);
    await call('DELETE', `/v1/backups/${full.id}`);
    // A backup cancelled at once (202, or 409 CONFLICT when it ended first), its record deleted.
    const cancelled = await call('POST', '/v1/backups', { volumeId: src, name: `cancel-${i}` });
    await call('DELETE', `/v1/jobs/${cancelled.id}`, undefined, [202, 409]);
    // Many long-polls of one job at once, all answered when it ends.
    const polls = await Promise.all(Array.from({ length: 20 }, () => call('GET', `/v1/jobs/${cancelled.id}?wait=60`)));
    if (polls.some((v) => v.state === 'running')) throw new Error('a long-poll was answered before its job ended');
    await call('DELETE', `/v1/backups/${cancelled.backupId}`);
    jobsRun++;
    // A job that fails after its 202: reset-state to error, then the backup deleted.
    const spare = await job('/v1/backups', { volumeId: src, name: `spare-${i}` });
    await job(`/v1/backups/${spare.id}/reset-state`, { state: 'error' });
    await call('DELETE', `/v1/backups/${spare.id}`);
    jobsRun += 2;
    if (i % 10 === 0) {
      await job('/v1/targets/posix/gc', { graceSeconds: 0 });
      jobsRun++;
      // Connections opened and left idle, then dropped.
      await Promise.all(Array.from({ length: 50 }, () => raw('', { drop: true })));
    }
    if (i % 5 === 0) {
      const v = cli('volume', 'create', `made-${i}`, '--size', '1MiB');
      await call('DELETE', `/v1/volumes/${v.id}`);
    }
    await badRequests(i);
    badRun += 14;
    if (i % every === 0) await sample(`cycle ${i}`);
  }
  const seconds = Math.round((performance.now() - t0) / 1000);
  console.log(`${jobsRun} jobs and ${badRun} bad requests in ${seconds} s; quiet for 40 s (idle release after 30 s)`);
  await new Promise((r) => setTimeout(r, 40_000));
  await sample('idle 40 s');
} finally {
  server.kill('SIGTERM');
  const code = await new Promise((r) => server.once('exit', r));
  console.log(`server exited with ${code}`);
  if (!flag('--keep')) rmSync(work, { recursive: true, force: true });
}
