import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { NbdClient } from '@cairn/nbd';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnSpawn, cairnWithin, jsonError, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

/** The JSON document `backup serve --json` prints once the export listens (it may span several lines). */
function servedView(child: ChildProcess): Promise<any> {
  return new Promise<any>((resolve, reject) => {
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
}

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
    const view = await servedView(child);
    expect(view).toMatchObject({ backupId, exportName: backupId, size: 4 * MiB, readOnly: true });
    expect(view.uri).toContain(socket);
    const out = join(cwd, 'copy.raw');
    execFileSync('nbdcopy', [view.uri, out]);
    expect((await readFile(out)).equals(data)).toBe(true);
    child.kill('SIGTERM');
    expect((await exit).code).toBe(0);
  });

  it('backup serve --max-connections 1 refuses a second NBD client with "too many connections" while the first is connected', async () => {
    const socket = join(cwd, 'm.sock');
    const { child, exit } = cairnSpawn(['backup', 'serve', backupId, '--socket', socket, '--max-connections', '1', '--json'], { cwd });
    await servedView(child);
    const first = await NbdClient.connect({ path: socket, exportName: backupId });
    await expect(NbdClient.connect({ path: socket, exportName: backupId })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringMatching(/too many connections/) });
    expect((await first.read(0, 4096)).equals(data.subarray(0, 4096))).toBe(true);
    await first.disconnect();
    child.kill('SIGTERM');
    expect((await exit).code).toBe(0);
  });

  it.each(['0', '-1', '1.5', 'many', '10001'])('backup serve --max-connections %s exits 2 (usage)', async (n) => {
    expect((await cairn(['backup', 'serve', backupId, '--socket', join(cwd, 'x.sock'), '--max-connections', n], { cwd })).code).toBe(2);
  });

  // The same rules as cairn serve's count options (commands/whole-number.ts): decimal digits only.
  it.each([' 5', '5 ', '1e3', '0x10', '+5', ''])('backup serve --max-connections %j is INVALID_INPUT, exit 2 (usage), never serving', async (n) => {
    // Killed if it starts serving (a value taken), so the test fails instead of hanging.
    const r = await cairnWithin(15_000, ['backup', 'serve', backupId, '--socket', join(cwd, 'y.sock'), '--max-connections', n, '--json'], cwd);
    expect(r.killed).toBe(false);
    expect(r.code).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('--max-connections takes a whole number from 1 to 10000') });
  });

  it('backup serve of an unknown id exits 3 and --socket with --listen exits 2', async () => {
    expect((await cairn(['backup', 'serve', 'no-such-backup'], { cwd })).code).toBe(3);
    expect((await cairn(['backup', 'serve', backupId, '--socket', join(cwd, 'x.sock'), '--listen', '127.0.0.1:0'], { cwd })).code).toBe(2);
  });
});
