import { spawn } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { patternBytes } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';
import { driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;
const fixture = fileURLToPath(new URL('./fixtures/delete-volume-stalled.mjs', import.meta.url));

/** Runs a deleteVolume of `volumeId` in a child process and SIGKILLs it where it removes the image. */
async function deleteKilledAtImage(directory: string, volumeId: string): Promise<void> {
  const child = spawn(process.execPath, [fixture, directory, volumeId], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('removing image\n')) resolve();
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    void exited.then(() => reject(new Error(`the deleting child exited before removing the image: ${out}`)));
  });
  child.kill('SIGKILL');
  await exited;
}

/** 512-byte blocks allocated to the entries of `volumes/` named after `id`, and their names. */
async function leftOf(directory: string, id: string): Promise<{ names: string[]; blocks: number }> {
  const dir = join(directory, 'volumes');
  const names = (await readdir(dir)).filter((n) => n.startsWith(id)).sort();
  let blocks = 0;
  for (const n of names) blocks += (await stat(join(dir, n))).blocks;
  return { names, blocks };
}

/**
 * Contract (volume-deletion.ts): a deleteVolume killed midway — here SIGKILLed in a real process
 * right where it removes the image — never leaves an image that nothing names. The volume is gone
 * at once (not listed, NOT_FOUND), and the next listVolumes, in any process, removes what is left:
 * image, writer lock, bitmaps and the renamed sidecar, so the space comes back.
 */
describe('a volume deletion killed midway', () => {
  const t = driverPerTest();

  it('is finished by the next listVolumes: the volume is gone and its image space reclaimed', async () => {
    const v = await t.driver.createVolume({ size: 8 * MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, patternBytes(4 * MiB, 5));
    await t.driver.detach(a.id);
    await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const kept = await t.driver.createVolume({ size: MiB, name: 'kept' });
    expect((await leftOf(t.dir, v.id)).blocks).toBeGreaterThanOrEqual((4 * MiB) / 512);

    await deleteKilledAtImage(t.dir, v.id);

    const fresh = new FileVolumeDriver({ directory: t.dir }); // as another process after the crash
    await expect(fresh.getVolume(v.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await fresh.listVolumes()).map((x) => x.id)).toEqual([kept.id]);
    expect(await leftOf(t.dir, v.id)).toEqual({ names: [], blocks: 0 });
    expect((await fresh.getVolume(kept.id)).name).toBe('kept');
  });
});
