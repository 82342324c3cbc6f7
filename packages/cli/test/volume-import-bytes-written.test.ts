import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, MiB, removeDir, tempDir } from './helpers.js';

/**
 * `volume import` of a qcow2 or VMDK: qemu-img writes into the volume over NBD with several
 * requests in flight at once (`convert -W`). The result's `bytesWritten` counts every byte of
 * each of them, none lost when they overlap in time.
 */
describe('volume import of a qcow2/VMDK: bytesWritten with concurrent writes', () => {
  let cwd: string;
  let data: Buffer;
  beforeAll(async () => {
    cwd = await tempDir();
    // 8 MiB of random data: every block differs from a new (zero) volume, so all of it is written.
    data = randomBytes(8 * MiB);
    await writeFile(join(cwd, 'd.raw'), data);
  });
  afterAll(() => removeDir(cwd));

  for (const format of ['qcow2', 'vmdk'] as const) {
    it(`a ${format} image of 8 MiB of data reports 8 MiB written, and the volume holds it`, async () => {
      const image = join(cwd, `d.${format}`);
      execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', format, join(cwd, 'd.raw'), image]);
      // --into an existing zero volume: differingWrites compares every block (no --target-is-zero shortcut).
      const v = await cairnJson(['volume', 'create', `into-${format}`, '--size', '8MiB'], { cwd });
      const into = await cairnJson(['volume', 'import', image, '--into', v.id], { cwd });
      expect(into).toMatchObject({ format, created: false, bytesScanned: 8 * MiB, bytesWritten: 8 * MiB });
      const made = await cairnJson(['volume', 'import', image, '--name', `new-${format}`], { cwd });
      expect(made).toMatchObject({ format, created: true, bytesScanned: 8 * MiB, bytesWritten: 8 * MiB });
      for (const name of [`into-${format}`, `new-${format}`]) {
        const out = join(cwd, `${name}.raw`);
        await cairnJson(['volume', 'export', name, out], { cwd });
        expect((await readFile(out)).equals(data)).toBe(true);
      }
    }, 60_000);
  }
});
