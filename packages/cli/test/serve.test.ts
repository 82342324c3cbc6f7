import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnSpawn, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

describe('cairn backup serve', () => {
  let cwd: string;
  let data: Buffer;
  let backupId: string;

  beforeAll(async () => {
    cwd = await tempDir();
    data = await writeRawImage(join(cwd, 'src.raw'), 4 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'src.raw'), '--name', 'src'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'src'], { cwd })).id;
  });
  afterAll(() => removeDir(cwd));

  it('backup serve <id> --socket serves the backup over NBD until SIGTERM: nbdcopy reads it byte-exact, exit 0', async () => {
    const socket = join(cwd, 'b.sock');
    const { child, exit } = cairnSpawn(['backup', 'serve', backupId, '--socket', socket, '--json'], { cwd });
    // The JSON document is printed once the export listens; it may span several lines.
    const view = await new Promise<any>((resolve, reject) => {
      let text = '';
      createInterface({ input: child.stdout! }).on('line', (l) => {
        text += l;
        try {
          resolve(JSON.parse(text));
        } catch {
          // not complete yet
        }
      });
      child.once('exit', (code) => reject(new Error(`serve exited early with ${code}`)));
    });
    expect(view).toMatchObject({ backupId, exportName: backupId, size: 4 * MiB, readOnly: true });
    expect(view.uri).toContain(socket);
    const out = join(cwd, 'copy.raw');
    execFileSync('nbdcopy', [view.uri, out]);
    expect((await readFile(out)).equals(data)).toBe(true);
    child.kill('SIGTERM');
    expect((await exit).code).toBe(0);
  });

  it('backup serve of an unknown id exits 3 and --socket with --listen exits 2', async () => {
    expect((await cairn(['backup', 'serve', 'no-such-backup'], { cwd })).code).toBe(3);
    expect((await cairn(['backup', 'serve', backupId, '--socket', join(cwd, 'x.sock'), '--listen', '127.0.0.1:0'], { cwd })).code).toBe(2);
  });
});
