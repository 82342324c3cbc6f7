import { spawn } from 'node:child_process';
import { chmod, lstat } from 'node:fs/promises';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { NbdClient } from '@cairn/nbd';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, cairnSpawn, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

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

/** What connect() to `path` gives a process of uid/gid 65534: `connected` or the error code. */
function connectAsNobody(path: string): Promise<string> {
  const script = `require('net').connect(process.argv[1]).on('connect', () => { console.log('connected'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(0); });`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script, path], { uid: NOBODY, gid: NOBODY, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', () => (out.trim() ? resolve(out.trim()) : reject(new Error(`client printed nothing: ${err}`))));
  });
}

/** `backup serve` serves the decrypted backup on a socket only its user may connect to, whatever the umask. */
describe('cairn backup serve: socket permissions', () => {
  let cwd: string;
  let backupId: string;

  beforeAll(async () => {
    cwd = await tempDir();
    await chmod(cwd, 0o755); // other users may reach the socket's directory
    await writeRawImage(join(cwd, 'src.raw'), 4 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'src.raw'), '--name', 'src'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'src'], { cwd })).id;
  });
  afterAll(() => removeDir(cwd));

  /** Starts `backup serve` on `socket` under umask 000 (which the cairn process inherits); resolves once it listens. */
  async function serveUnderUmask000(socket: string): Promise<ReturnType<typeof cairnSpawn>> {
    const old = process.umask(0o000);
    let served: ReturnType<typeof cairnSpawn>;
    try {
      served = cairnSpawn(['backup', 'serve', backupId, '--socket', socket, '--json'], { cwd });
    } finally {
      process.umask(old);
    }
    await servedView(served.child);
    return served;
  }

  it('under umask 000 the --socket is 0600, the owner reads the export, and it is removed at SIGTERM', async () => {
    const socket = join(cwd, 'private.sock');
    const { child, exit } = await serveUnderUmask000(socket);
    try {
      expect((await lstat(socket)).mode & 0o777).toBe(0o600);
      const client = await NbdClient.connect({ path: socket, exportName: backupId });
      expect((await client.read(0, 4096)).length).toBe(4096);
      await client.disconnect();
    } finally {
      child.kill('SIGTERM');
    }
    expect((await exit).code).toBe(0);
    expect(await lstat(socket).catch((e: NodeJS.ErrnoException) => e.code)).toBe('ENOENT');
  });

  it.skipIf(!isRoot)('under umask 000 another user (uid 65534) cannot connect to the --socket (needs root to start a process of another user; skipped otherwise)', async () => {
    const socket = join(cwd, 'other.sock');
    const { child, exit } = await serveUnderUmask000(socket);
    try {
      expect(await connectAsNobody(socket)).toBe('EACCES');
    } finally {
      child.kill('SIGTERM');
    }
    expect((await exit).code).toBe(0);
  });
});
