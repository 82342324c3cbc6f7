import { lstat, mkdir, stat } from 'node:fs/promises';
import type { ChildProcess } from 'node:child_process';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { NbdClient } from '@cairn/nbd';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnSpawn, jsonError, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

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

/**
 * docs/cli.md, `backup serve`: the default socket works from any working directory. Where
 * `<state dir>/serve-<id>.sock` is too long for a unix socket path, it goes in a private directory
 * (0700) under the temporary directory, printed in the URI and removed when serving stops; a
 * `--socket` that is too long is `INVALID_INPUT` saying to give a shorter one.
 */
describe('cairn backup serve from a deep working directory', () => {
  let top: string;
  let cwd: string;
  let backupId: string;

  beforeAll(async () => {
    top = await tempDir();
    cwd = join(top, 'a-working-directory-deep-enough', 'that-the-state-dir-socket-cannot-fit');
    await mkdir(cwd, { recursive: true });
    await writeRawImage(join(cwd, 'src.raw'), 2 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'src.raw'), '--name', 'src'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'src'], { cwd })).id;
    expect(Buffer.byteLength(join(cwd, '.cairn', `serve-${backupId}.sock`))).toBeGreaterThan(107);
  }, 60_000);
  afterAll(() => removeDir(top));

  it('without --socket: serves on an owner-only socket in a private temporary directory, removed at SIGTERM', async () => {
    const { child, exit } = cairnSpawn(['backup', 'serve', backupId, '--json'], { cwd });
    let socket: string;
    try {
      const view = await servedView(child);
      socket = new URL(view.uri).searchParams.get('socket')!;
      expect(basename(socket)).toBe(`serve-${backupId}.sock`);
      expect(basename(dirname(socket))).toMatch(/^cairn-serve-[A-Za-z0-9]{6}$/);
      expect(socket.startsWith(cwd)).toBe(false);
      expect((await stat(dirname(socket))).mode & 0o777).toBe(0o700);
      expect((await lstat(socket)).mode & 0o777).toBe(0o600);
      const client = await NbdClient.connect({ path: socket, exportName: backupId });
      expect((await client.read(0, 4096)).length).toBe(4096);
      await client.disconnect();
    } finally {
      child.kill('SIGTERM');
    }
    const r = await exit;
    expect(r.code, r.stderr).toBe(0);
    await expect(lstat(dirname(socket))).rejects.toMatchObject({ code: 'ENOENT' });
  }, 60_000);

  it('a --socket that is too long: INVALID_INPUT (exit 2) saying to give a shorter path', async () => {
    const socket = join(cwd, 'x'.repeat(60), 'b.sock');
    const r = await cairn(['backup', 'serve', backupId, '--socket', socket, '--json'], { cwd });
    expect(r.code, r.stderr).toBe(2);
    const e = jsonError(r);
    expect(e.code).toBe('INVALID_INPUT');
    expect(e.message).toMatch(/too long.*shorter path/);
    expect(e.details).toMatchObject({ socket });
  }, 60_000);
});
