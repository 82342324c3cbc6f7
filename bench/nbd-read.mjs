#!/usr/bin/env node
// Measures (not a test): reading a qcow2 (half data; default 2 GiB) served by qemu-storage-daemon,
// through @cairn/nbd's NbdClient to /dev/null, against `nbdcopy` of the same export to /dev/null,
// interleaved in one run.   npm run bench:nbd   (or: node bench/nbd-read.mjs [GiB])
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, rmSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NbdClient, STATE_HOLE, STATE_ZERO } from '@cairn/nbd';

const GiB = 1024 ** 3 * Number(process.argv[2] ?? 2); // bytes in the image
const MiB = 1024 ** 2;
const RUNS = 7;

const dir = mkdtempSync(join(tmpdir(), 'nbd-measure-'));
const img = join(dir, 'disk.qcow2');
const sock = join(dir, 'nbd.sock');
execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, String(GiB)]);
// Half data: 4 MiB written in every 8 MiB.
const writes = [];
for (let o = 0; o < GiB; o += 8 * MiB) writes.push('-c', `write -P ${(o / MiB) & 0xff} ${o} ${4 * MiB}`);
execFileSync('qemu-io', ['-f', 'qcow2', ...writes, img], { stdio: 'ignore' });

const daemon = spawn('qemu-storage-daemon', [
  '--blockdev', `driver=file,node-name=file0,filename=${img},cache.direct=off`,
  '--blockdev', 'driver=qcow2,node-name=fmt0,file=file0',
  '--nbd-server', `addr.type=unix,addr.path=${sock}`,
  '--export', 'type=nbd,id=exp0,node-name=fmt0,name=disk,writable=off',
], { stdio: 'ignore' });
while (!existsSync(sock)) await new Promise((r) => setTimeout(r, 10));

/** Reads [0, size) with `window` workers of `chunk` bytes each into pooled buffers, written to /dev/null. */
async function readAll(client, chunk, window, ranges) {
  const devnull = openSync('/dev/null', 'w');
  const queue = [];
  for (const { offset, length } of ranges) for (let o = offset; o < offset + length; o += chunk) queue.push([o, Math.min(chunk, offset + length - o)]);
  let next = 0;
  const worker = async () => {
    const buf = Buffer.allocUnsafe(chunk);
    while (next < queue.length) {
      const [o, n] = queue[next++];
      const got = await client.read(o, n, buf);
      writeSync(devnull, got);
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
  closeSync(devnull);
}

/** Seconds taken by `fn`. */
async function timed(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const uri = `nbd+unix:///disk?socket=${sock}`;
const client = await NbdClient.connect({ path: sock, exportName: 'disk', maxInFlight: 16 });
const whole = [{ offset: 0, length: client.size }];
// Variants run interleaved, round after round, so background load hits all of them alike.
const variants = {
  'nbdcopy URI /dev/null': () => execFileSync('nbdcopy', [uri, '/dev/null']),
  'NbdClient every byte, 1 MiB x 16 in flight': () => readAll(client, MiB, 16, whole),
  'NbdClient every byte, 4 MiB x 8 in flight': () => readAll(client, 4 * MiB, 8, whole),
  'NbdClient base:allocation, data only, 1 MiB x 16': async () => {
    const map = await client.mapExtents('base:allocation');
    await readAll(client, MiB, 16, map.filter((e) => (e.flags & (STATE_HOLE | STATE_ZERO)) === 0));
  },
  'NbdClient base:allocation, data only, 4 MiB x 8': async () => {
    const map = await client.mapExtents('base:allocation');
    await readAll(client, 4 * MiB, 8, map.filter((e) => (e.flags & (STATE_HOLE | STATE_ZERO)) === 0));
  },
};
const times = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
try {
  for (let round = 0; round < RUNS; round++) for (const [k, fn] of Object.entries(variants)) times[k].push(await timed(fn));
  const rate = (t) => (GiB / t / 1e9).toFixed(2);
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const results = {};
  for (const [k, ts] of Object.entries(times)) {
    results[k] = median(ts);
    console.log(`${k.padEnd(50)} median ${rate(median(ts))} GB/s, best ${rate(Math.min(...ts))} GB/s (logical, ${RUNS} runs)`);
  }
  const ref = results['nbdcopy URI /dev/null'];
  for (const k of Object.keys(variants).slice(1)) console.log(`${k.padEnd(50)} ${(ref / results[k]).toFixed(2)}x nbdcopy (medians)`);
  await client.disconnect();
} finally {
  daemon.kill('SIGTERM');
  await new Promise((r) => daemon.once('exit', r));
  rmSync(dir, { recursive: true, force: true });
}
