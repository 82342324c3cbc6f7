// Measures the ways to copy an image for a snapshot, on a 1 GiB half-sparse image
// (1 MiB of random data every 2 MiB). Build first (npx tsc -b plugins/volume-file).
// usage: node bench/snapshot-copy.mjs [workdir]   (CAIRN_VOLUME_FILE_NO_FS_EXT=1 forces the zero scan)
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, mkdir, open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { sparseCopy } from '../dist/image-copy.js';
import { fsExt } from '../dist/native-fs.js';

const MiB = 1024 * 1024;
const work = process.argv[2] ?? join(import.meta.dirname, '.work');
await mkdir(work, { recursive: true });
const src = join(work, 'source.img');

const fh = await open(src, 'w');
await fh.truncate(1024 * MiB);
const chunk = randomBytes(MiB);
for (let off = 0; off < 1024 * MiB; off += 2 * MiB) await fh.write(chunk, 0, MiB, off);
await fh.sync();
await fh.close();

const usage = async (p) => ((await stat(p)).blocks * 512) / MiB;
const row = async (method, fn) => {
  const dst = join(work, `copy-${method.replace(/[^A-Za-z0-9]+/g, "-")}.img`);
  await rm(dst, { force: true });
  const t0 = performance.now();
  let error;
  try {
    await fn(dst);
  } catch (err) {
    error = err.code ?? err.message;
  }
  const ms = performance.now() - t0;
  const du = error ? 0 : await usage(dst);
  console.log(JSON.stringify({ method, fsExt: !!fsExt(), seconds: +(ms / 1000).toFixed(2), diskMiB: Math.round(du), error }));
  await rm(dst, { force: true });
};

console.log(JSON.stringify({ source: 'source.img', sizeMiB: 1024, diskMiB: Math.round(await usage(src)) }));
await row('reflink (COPYFILE_FICLONE_FORCE)', (dst) => copyFile(src, dst, constants.COPYFILE_FICLONE_FORCE));
await row('fs.copyFile (plain)', async (dst) => {
  await copyFile(src, dst);
  const f = await open(dst, 'r+');
  await f.sync();
  await f.close();
});
await row(fsExt() ? 'sparse copy (SEEK_DATA/SEEK_HOLE)' : 'sparse copy (zero scan)', (dst) => sparseCopy(src, dst));
await rm(src, { force: true });
