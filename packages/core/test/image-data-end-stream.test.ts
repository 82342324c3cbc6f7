import { describe, expect, it } from 'vitest';
import { assertDataWithinFile, assertDataWithinFiles, runBounded } from '../src/index.js';

// assertDataWithinFile reads a streamed `qemu-img map` report entry by entry (one a line, as
// qemu-img prints it), so that a fragmented image's map of tens of MiB is never kept whole
// (runBounded's onStdout); the qcow2 driver's end-to-end test is plugins/volume-qcow2/test/fragmented-map.test.ts.

const entry = (start: number, offset: number, length: number) => `{ "start": ${start}, "length": ${length}, "depth": 0, "present": true, "zero": false, "data": true, "offset": ${offset}}`;
/** A report as qemu-img prints it, handed over in pieces of `piece` bytes. */
const streamed = (text: string, piece: number) => async (sink: (chunk: Buffer) => void) => {
  const bytes = Buffer.from(text);
  for (let at = 0; at < bytes.length; at += piece) sink(bytes.subarray(at, at + piece));
};
const check = { 'image-end-offset': 4 * 65536 };

describe('assertDataWithinFile with a streamed map', () => {
  const report = `[${entry(0, 65536, 65536)},\n${entry(65536, 3 * 65536, 65536)},\n${entry(131072, 2 * 65536, 65536)}]\n`;

  it('finds the data end across pieces of any size: CORRUPT when it passes the file end, whole when not', async () => {
    for (const piece of [1, 7, 100, 1 << 20]) {
      await expect(assertDataWithinFile('x', { check, fileSize: 4 * 65536 - 1, streamMap: streamed(report, piece), mapWhat: 'map' })).rejects.toMatchObject({
        code: 'CORRUPT',
        details: { fileSize: 4 * 65536 - 1, dataEnd: 4 * 65536 },
      });
    }
    const whole = `[${entry(0, 65536, 65536)},\n${entry(65536, 2 * 65536, 65536)}]\n`;
    await expect(assertDataWithinFile('x', { check, fileSize: 4 * 65536 - 1, streamMap: streamed(whole, 5), mapWhat: 'map' })).resolves.toBeUndefined();
    await expect(assertDataWithinFile('x', { check, fileSize: 4 * 65536 - 1, streamMap: streamed('[]\n', 1), mapWhat: 'map' })).resolves.toBeUndefined();
  });

  it('is INTERNAL for a report that is not a list of one entry a line', async () => {
    for (const bad of ['', 'not json\n', `[${entry(0, 65536, 65536)},\n`, `${entry(0, 65536, 65536)}]\n`, `[${entry(0, 65536, 65536)}\n${entry(65536, 0, 1)}]\n`, '[1]\n', '[]\n[]\n']) {
      await expect(assertDataWithinFile('x', { check, fileSize: 1, streamMap: streamed(bad, 3), mapWhat: 'map' })).rejects.toMatchObject({ code: 'INTERNAL' });
    }
  });
});

describe('assertDataWithinFiles (an image whose data lie in several files)', () => {
  // Three extent files of 4 MiB of guest data each (guest ranges [0, 4M), [4M, 8M), [8M, 12M)); each
  // entry's host offset is in the file of the range its start falls in.
  const M = 1 << 20;
  const files = (sizes: number[]) => sizes.map((size, i) => ({ path: `e${i + 1}`, size, guestRange: { start: i * 4 * M, end: (i + 1) * 4 * M } }));
  const report = `[${entry(0, 65536, 65536)},\n${entry(65536, 0, 65536)},\n${entry(4 * M, 65536, 3 * 65536)},\n{ "start": ${4 * M + 3 * 65536}, "length": 65536, "depth": 0, "present": false, "zero": true, "data": false},\n${entry(8 * M + 65536, 2 * 65536, 65536)}]\n`;
  const vmdk = { 'image-end-offset': undefined };

  it('judges each file by the entries starting in its guest range, from one streamed map run', async () => {
    let runs = 0;
    const streamMap = async (sink: (chunk: Buffer) => void) => {
      runs++;
      await streamed(report, 7)(sink);
    };
    // Data ends: e1 131072, e2 262144, e3 196608.
    await expect(assertDataWithinFiles(files([131072, 262144, 196608]), { check: vmdk, streamMap, mapWhat: 'map' })).resolves.toBeUndefined();
    expect(runs).toBe(1);
    await expect(assertDataWithinFiles(files([131072, 262143, 196607]), { check: vmdk, streamMap, mapWhat: 'map' })).rejects.toMatchObject({
      code: 'CORRUPT',
      message: expect.stringContaining('image e2 '),
      details: { file: 'e2', fileSize: 262143, dataEnd: 262144 },
    });
    await expect(assertDataWithinFiles(files([131072, 262144, 196607]), { check: vmdk, streamMap, mapWhat: 'map' })).rejects.toMatchObject({ code: 'CORRUPT', details: { file: 'e3', dataEnd: 196608 } });
    expect(runs).toBe(3);
  });

  it('ignores entries in no file\'s range, and runs no map when every file reaches image-end-offset', async () => {
    const streamMap = streamed(report, 1 << 20);
    // Only the second file: the first and the third's entries do not count against it.
    await expect(assertDataWithinFiles(files([0, 262144]).slice(1), { check: vmdk, streamMap, mapWhat: 'map' })).resolves.toBeUndefined();
    let runs = 0;
    await expect(
      assertDataWithinFiles(files([1, 1, 1]), {
        check: { 'image-end-offset': 1 },
        streamMap: async () => void runs++,
        mapWhat: 'map',
      }),
    ).resolves.toBeUndefined();
    expect(runs).toBe(0);
    await expect(assertDataWithinFiles([], { check: vmdk, streamMap: async () => void runs++, mapWhat: 'map' })).resolves.toBeUndefined();
    expect(runs).toBe(0);
  });

  it('is INTERNAL for an unreadable report', async () => {
    await expect(assertDataWithinFiles(files([1, 1]), { check: vmdk, streamMap: streamed('[1]\n', 2), mapWhat: 'map' })).rejects.toMatchObject({ code: 'INTERNAL' });
  });
});

describe('runBounded with onStdout', () => {
  it('hands stdout over as it comes, without the 16 MiB limit of a kept stream', async () => {
    let bytes = 0;
    const r = await runBounded('head', ['-c', String(20 * 1024 * 1024), '/dev/zero'], { bound: { kind: 'deadline', ms: 60_000 }, what: 'head', driver: 'test', onStdout: (c) => (bytes += c.length) });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('');
    expect(bytes).toBe(20 * 1024 * 1024);
  });

  it('kills the child and fails with what onStdout threw', async () => {
    const p = runBounded('sh', ['-c', 'echo one; exec sleep 30'], {
      bound: { kind: 'deadline', ms: 60_000 },
      what: 'sh',
      driver: 'test',
      onStdout: () => {
        throw new Error('no thanks');
      },
    });
    await expect(p).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringContaining('no thanks') });
  });
});
