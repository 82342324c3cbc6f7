import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'vitest';
import type { Extent } from '@cairn/core';
import { FileVolumeDriver } from '../src/index.js';
import { dirPerTest, untilNotBusy } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/random-writer.mjs', import.meta.url));
/** A multiple of 512 (the contract), not of 4 KiB nor of the 64 KiB granule. */
const SIZE = 2 * 1024 * 1024 + 25 * 512;
const ROUNDS = 14;

/**
 * Byte offsets where `now` differs from `then` that no extent covers. Empty means the extents
 * report every change (over-reporting is allowed).
 */
function missed(then: Buffer, now: Buffer, extents: Extent[]): number[] {
  const covered = new Uint8Array(now.length);
  for (const e of extents) covered.fill(1, e.offset, e.offset + e.length);
  const out: number[] = [];
  for (let i = 0; i < now.length && out.length < 5; i++) if (now[i] !== then[i] && !covered[i]) out.push(i);
  return out;
}

/** Runs the random writer (with fs-ext, or forced to its fallbacks), SIGKILLs it after `ms`, waits for it to die. */
async function writeAndKill(directory: string, volumeId: string, seed: number, ms: number, noFsExt: boolean): Promise<void> {
  const env = { ...process.env, CAIRN_VOLUME_FILE_NO_FS_EXT: noFsExt ? '1' : '' };
  const child = spawn(process.execPath, [fixture, directory, volumeId, String(seed)], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await new Promise<void>((r) => child.stdout.once('data', () => r())); // started: the driver is loaded
  await sleep(ms);
  child.kill('SIGKILL');
  await exited;
  assert.equal(err, '', 'the writer failed on its own');
}

describe('FileVolumeDriver: writers SIGKILLed at random moments never make an incremental miss data', () => {
  const t = dirPerTest();

  it.each([
    { writer: 'with fs-ext', noFsExt: false },
    { writer: 'without fs-ext (flock(1) helpers, zero scan)', noFsExt: true },
  ])(`$writer: after each of ${ROUNDS} kills, every byte that differs from a checkpoint's content is in extents(changed), or the checkpoint is NOT_FOUND`, async ({ noFsExt }) => {
    const driver = new FileVolumeDriver({ directory: t.dir });
    const cbt = driver.changedBlockTracking;
    const v = await driver.createVolume({ size: SIZE });
    const image = join(t.dir, 'volumes', `${v.id}.img`);
    /** Live checkpoints with the image's content when each was made. */
    let live: { id: string; content: Buffer }[] = [];
    let checked = 0;
    for (let round = 0; round < ROUNDS; round++) {
      // A new checkpoint each round; now and then the middle one of three goes.
      const cp = await untilNotBusy(() => cbt.createCheckpoint(v.id));
      live.push({ id: cp.id, content: await readFile(image) });
      if (live.length > 3) {
        await cbt.deleteCheckpoint(v.id, live[1]!.id);
        live = live.filter((_, i) => i !== 1);
      }
      // Kill points spread from "before the first attach" to "many sessions in".
      await writeAndKill(t.dir, v.id, round * 7919 + 1, (round * 37) % 400, noFsExt);
      const now = await readFile(image);
      assert.equal(now.length, SIZE);
      for (const c of live) {
        // Seen twice: by a query that takes no lock (the writer mark, the stamp), and after an
        // attach that recovers the volume and persists the verdict.
        for (const phase of ['query', 'after attach'] as const) {
          if (phase === 'after attach') await driver.detach((await untilNotBusy(() => driver.attach({ kind: 'volume', id: v.id }, 'ro'))).id);
          let extents: Extent[];
          try {
            extents = await new FileVolumeDriver({ directory: t.dir }).changedBlockTracking.changedSince('volume', v.id, c.id);
          } catch (err) {
            assert.equal((err as { code?: string }).code, 'NOT_FOUND', String(err));
            continue;
          }
          checked++;
          assert.deepEqual(missed(c.content, now, extents), [], `round ${round}, ${phase}: changed bytes outside extents(changed) of checkpoint ${c.id}`);
        }
      }
    }
    // Each round's new checkpoint must also be checkable: not everything may be NOT_FOUND.
    assert.ok(checked > 0, 'no checkpoint was ever consistent: the test checked nothing');
  }, 60_000);
});
