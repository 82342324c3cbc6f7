import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { newId } from '@cairn/core';
import { driverPerTest, haveStrace } from './helpers.js';

const MiB = 1024 * 1024;
const built = fileURLToPath(new URL('../dist/index.js', import.meta.url));

/**
 * Runs `call` (an expression on `d`, a FileVolumeDriver on `directory`, and `volumeId`) in a child
 * process under strace, through the built package; resolves to what it printed and how many times
 * it opened `volumes/` and `snapshots/` as directories (one opendir per readdir).
 */
async function directoryReads(directory: string, volumeId: string, call: string): Promise<{ out: string; volumes: number; snapshots: number }> {
  const trace = join(directory, 'trace');
  const script = `const { FileVolumeDriver } = await import(${JSON.stringify(built)});
    const [directory, volumeId] = process.argv.slice(1);
    const d = new FileVolumeDriver({ directory });
    console.log(JSON.stringify((await ${call}).map((x) => x.id)));`;
  const { stdout } = await promisify(execFile)('strace', ['-f', '-e', 'trace=open,openat', '-o', trace, process.execPath, '--input-type=module', '-e', script, directory, volumeId]);
  const dirOpens = (await readFile(trace, 'utf8')).split('\n').filter((l) => l.includes('O_DIRECTORY'));
  const count = (sub: string) => dirOpens.filter((l) => l.includes(`"${join(directory, sub)}"`)).length;
  return { out: stdout.trim(), volumes: count('volumes'), snapshots: count('snapshots') };
}

/**
 * Contract (file-volume-driver.ts, listVolumes and listSnapshots): a listing reads the directory of
 * what it lists once, finishing the deletions killed midway (`<id>.deleting`, deletion.ts) found
 * among the same names; listVolumes reads `snapshots/` once more (to finish snapshot deletions,
 * so their space comes back), listSnapshots never reads `volumes/`.
 */
describe('a listing reads each directory once (strace)', () => {
  const t = driverPerTest();

  it('listVolumes and listSnapshots, with a deletion of each kind left midway, which they finish', async (ctx) => {
    if (!haveStrace()) return ctx.skip('strace cannot run here');
    const v = await t.driver.createVolume({ size: MiB });
    const s = await t.driver.createSnapshot(v.id, 's');
    // What a deletion killed after removing its files, before its renamed sidecar, leaves.
    const [deadVolume, deadSnapshot] = [newId(), newId()];
    await writeFile(join(t.dir, 'volumes', `${deadVolume}.deleting`), '{}');
    await writeFile(join(t.dir, 'snapshots', `${deadSnapshot}.deleting`), '{}');

    expect(await directoryReads(t.dir, v.id, 'd.listVolumes()')).toEqual({ out: JSON.stringify([v.id]), volumes: 1, snapshots: 1 });
    expect((await readdir(join(t.dir, 'volumes'))).filter((n) => n.endsWith('.deleting'))).toEqual([]);
    expect((await readdir(join(t.dir, 'snapshots'))).filter((n) => n.endsWith('.deleting'))).toEqual([]);

    await writeFile(join(t.dir, 'snapshots', `${deadSnapshot}.deleting`), '{}');
    expect(await directoryReads(t.dir, v.id, 'd.listSnapshots(volumeId)')).toEqual({ out: JSON.stringify([s.id]), volumes: 0, snapshots: 1 });
    expect((await readdir(join(t.dir, 'snapshots'))).filter((n) => n.endsWith('.deleting'))).toEqual([]);
  });
});
