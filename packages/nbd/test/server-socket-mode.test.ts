// NbdServer.listen() on a unix socket: the socket is owner-only (0600) whatever the umask, so no
// other user may connect (connect(2) needs write permission on the socket file). Checked with a
// real client running as another user (uid 65534), which needs root to start.
import { spawn } from 'node:child_process';
import { chmod, lstat, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdServer, type NbdBackend } from '../src/index.js';
import { outcome } from './helpers/outcome.js';
import { tempDir } from './helpers/peers.js';

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;
const backend: NbdBackend = { size: 1024 * 1024, read: async (_o, len) => [{ zero: len }] };
const newServer = (): NbdServer => new NbdServer({ exports: [{ name: 'x', backend }] });

let dir: { path: string; remove: () => Promise<void> };
let n = 0;
const socketPath = (): string => join(dir.path, `m${++n}.sock`);

beforeAll(async () => {
  dir = await tempDir('nbd-mode-');
  await chmod(dir.path, 0o755); // reachable by other users: only the socket's own mode protects it
});
afterAll(async () => {
  await dir?.remove();
});

/** Runs `fn` with the process umask set to `mask` (test files run in their own process: pool forks). */
async function withUmask<T>(mask: number, fn: () => Promise<T>): Promise<T> {
  const old = process.umask(mask);
  try {
    return await fn();
  } finally {
    process.umask(old);
  }
}

/** What connect() to `path` gives a process of uid `uid` and gid `gid` (no supplementary groups): `connected` or the error code. */
function connectAs(uid: number, gid: number, path: string): Promise<string> {
  const script = `require('net').connect(process.argv[1]).on('connect', () => { console.log('connected'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(0); });`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script, path], { uid, gid, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', () => (out.trim() ? resolve(out.trim()) : reject(new Error(`client printed nothing: ${err}`))));
  });
}

/** Whether this process can connect to `path`. */
function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('NbdServer unix socket permissions', () => {
  for (const mask of [0o000, 0o002, 0o022]) {
    it(`under umask ${mask.toString(8).padStart(3, '0')} the socket is 0600 and nothing else is left in its directory`, async () => {
      const server = newServer();
      const path = socketPath();
      try {
        await withUmask(mask, () => server.listen({ path }));
        const st = await lstat(path);
        expect(st.isSocket()).toBe(true);
        expect(st.mode & 0o777).toBe(0o600);
        expect(await accepts(path)).toBe(true);
        expect((await readdir(dir.path)).filter((e) => e.startsWith('.'))).toEqual([]);
      } finally {
        await server.close();
      }
      expect(await lstat(path).catch((e: NodeJS.ErrnoException) => e.code)).toBe('ENOENT');
    });
  }

  const skipNote = '(needs root to start a process of another user; skipped otherwise)';

  it.skipIf(!isRoot)(`under umask 000 another user cannot connect, the owner can ${skipNote}`, async () => {
    const server = newServer();
    const path = socketPath();
    try {
      await withUmask(0o000, () => server.listen({ path }));
      expect(await connectAs(NOBODY, NOBODY, path)).toBe('EACCES');
      expect(await accepts(path)).toBe(true);
    } finally {
      await server.close();
    }
  });

  it.skipIf(!isRoot)(`under umask 002 a member of the socket's group cannot connect ${skipNote}`, async () => {
    const server = newServer();
    const path = socketPath();
    try {
      await withUmask(0o002, () => server.listen({ path }));
      // uid 65534 with gid 0: the socket's group (this root process's), not its owner.
      expect((await lstat(path)).gid).toBe(0);
      expect(await connectAs(NOBODY, 0, path)).toBe('EACCES');
    } finally {
      await server.close();
    }
  });

  it('a path that exists is CONFLICT, the file is left as it was, and a later listen() elsewhere works', async () => {
    const path = socketPath();
    await writeFile(path, 'not a socket');
    const server = newServer();
    try {
      expect(await outcome(server.listen({ path }), 5000)).toBe('CONFLICT');
      expect(await readFile(path, 'utf8')).toBe('not a socket');
      expect((await readdir(dir.path)).filter((e) => e.startsWith('.'))).toEqual([]);
      const other = socketPath();
      await server.listen({ path: other });
      expect(await accepts(other)).toBe(true);
    } finally {
      await server.close();
    }
  });

  it('a path longer than a unix socket path may be is INVALID_INPUT and nothing is made (not a truncated name)', async () => {
    const before = await readdir(dir.path);
    const path = join(dir.path, 'x'.repeat(108 - dir.path.length)); // 109 bytes
    const server = newServer();
    try {
      expect(await outcome(server.listen({ path }), 5000)).toBe('INVALID_INPUT');
      expect(await readdir(dir.path)).toEqual(before);
    } finally {
      await server.close();
    }
  });

  it('close() leaves a file that replaced the socket at its path alone', async () => {
    const path = socketPath();
    const server = newServer();
    await server.listen({ path });
    await rm(path);
    await writeFile(path, 'someone else');
    await server.close();
    expect(await readFile(path, 'utf8')).toBe('someone else');
  });
});
