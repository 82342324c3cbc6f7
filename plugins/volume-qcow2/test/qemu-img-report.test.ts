import { chmod, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CairnError } from '@cairn/core';
import { QemuImg } from '../src/qemu-img.js';
import { tempDir } from './helpers.js';

// `qemu-img info` that exits 0 with stdout that is not a JSON object (a broken build, a wrapper
// that prints a banner) made info()/describe() throw a bare SyntaxError (or a TypeError for JSON
// `null`) instead of a CairnError; `check` had the same TypeError for JSON that is not an object.
// Both are now INTERNAL `unreadable report`. The qemu-img here is a stand-in for a misbehaving one:
// a script (named as the binary, as the driver's `qemuImg` option allows) that prints the file
// `stdout` beside it and exits 0.

let dir: string;
let img: QemuImg;

beforeEach(async () => {
  dir = await tempDir();
  const standIn = join(dir, 'misbehaving-qemu-img');
  await writeFile(standIn, `#!/bin/sh\ncat "${join(dir, 'stdout')}"\nexit 0\n`);
  await chmod(standIn, 0o755);
  img = new QemuImg(standIn, 'qcow2', { timeoutMs: 10_000, stallMs: 10_000 });
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The error `promise` rejects with (fails the test when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.fail('resolved'),
    (err: unknown) => err,
  );
}

describe('qemu-img reports that are not a JSON object (stand-in qemu-img exiting 0)', () => {
  for (const stdout of ['qemu-img: some banner, not JSON\n', '', '{"virtual-size": 10', 'null\n', '[1, 2]\n', '"text"\n']) {
    it(`info and describe fail INTERNAL for stdout ${JSON.stringify(stdout)}`, async () => {
      await writeFile(join(dir, 'stdout'), stdout);
      // One at a time: a call started before the other was awaited could reject unhandled.
      for (const call of [() => img.info(join(dir, 'x.qcow2')), () => img.describe(join(dir, 'x.qcow2'))]) {
        const err = await rejection(call());
        expect(err).toBeInstanceOf(CairnError);
        expect(err).toMatchObject({ code: 'INTERNAL', message: expect.stringContaining('info: unreadable report') });
      }
      expect(await img.lockState(join(dir, 'x.qcow2'))).toBe('unknown');
    });
  }

  it('check fails INTERNAL for JSON that is not an object', async () => {
    await writeFile(join(dir, 'stdout'), 'null\n');
    const err = await rejection(img.assertWhole(join(dir, 'x.qcow2')));
    expect(err).toBeInstanceOf(CairnError);
    expect(err).toMatchObject({ code: 'INTERNAL', message: expect.stringContaining('check: unreadable report') });
  });

  it('a JSON object is still read', async () => {
    await writeFile(join(dir, 'stdout'), '{"virtual-size": 1048576, "format-specific": {"data": {"bitmaps": [{"name": "b", "flags": ["auto"]}]}}}\n');
    const { size, bitmaps } = await img.describe(join(dir, 'x.qcow2'));
    expect(size).toBe(1048576);
    expect(bitmaps.get('b')).toEqual({ recording: true, inconsistent: false });
  });
});
