import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { patternBytes } from '@cairn/conformance';
import { dataExtents } from '../src/data-extents.js';
import { fsExt, type FsExt } from '../src/native-fs.js';
import { dirPerTest } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * `fh` as a file system whose st_blocks lags behind writes shows it (ZFS before its transaction
 * group syncs, some network file systems): data written, `stat().blocks` still 0. Everything else
 * is the real file. dataExtents takes the handle as a parameter: that is the seam.
 */
function laggingBlocks(fh: FileHandle): FileHandle {
  return new Proxy(fh, {
    get(target, prop) {
      if (prop === 'stat') return async () => Object.assign(await target.stat(), { blocks: 0 });
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** fs-ext with its lseek calls counted. */
function counting(ext: FsExt): { ext: FsExt; seeks: () => number } {
  let n = 0;
  return {
    ext: { seekSync: (fd, offset, whence) => (n++, ext.seekSync(fd, offset, whence)), flockSync: (fd, flags) => ext.flockSync(fd, flags) },
    seeks: () => n,
  };
}

describe('dataExtents when st_blocks lags behind writes', () => {
  const t = dirPerTest();
  let fh: FileHandle;
  beforeEach(async () => {
    fh = await open(join(t.dir, 'img'), 'w+');
    await fh.truncate(16 * MiB);
  });
  afterEach(async () => {
    await fh.close();
  });

  const backends = () => [{ name: 'zero scan', ext: null as FsExt | null }, ...(fsExt() ? [{ name: 'SEEK_DATA', ext: fsExt()! as FsExt | null }] : [])];

  it('a file with data whose stat reports 0 blocks still reports its data (SEEK_DATA and zero scan)', async () => {
    await fh.write(patternBytes(4 * KiB, 7), 0, 4 * KiB, 5 * MiB);
    const lagging = laggingBlocks(fh);
    expect((await lagging.stat()).blocks).toBe(0); // the injected lag
    for (const { name, ext } of backends()) {
      const extents = await dataExtents(lagging, { offset: 0, length: 16 * MiB }, ext);
      expect(
        extents.some((e) => e.offset <= 5 * MiB && 5 * MiB + 4 * KiB <= e.offset + e.length),
        `${name}: the 4 KiB written at 5 MiB is missing from ${JSON.stringify(extents)}`,
      ).toBe(true);
    }
  });

  // Without the st_blocks shortcut a fully sparse file must stay cheap: one SEEK_DATA that finds no data.
  it('a fully sparse file reports no data, at the cost of at most one lseek with fs-ext', async () => {
    const whole = { offset: 0, length: 16 * MiB };
    expect(await dataExtents(fh, whole, null)).toEqual([]); // the zero scan
    if (!fsExt()) return;
    const { ext, seeks } = counting(fsExt()!);
    expect(await dataExtents(fh, whole, ext)).toEqual([]);
    expect(seeks()).toBeLessThanOrEqual(1);
  });
});
