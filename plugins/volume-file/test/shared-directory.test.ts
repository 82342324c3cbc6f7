/**
 * A volumes directory shared between its owner and root (`sudo cairn …`): what root creates or
 * rewrites there keeps the directory's owner, so the owner's own process still lists, attaches and
 * snapshots its volumes afterwards. The owner is a real child process of uid 65534.
 */
import { spawn } from 'node:child_process';
import { chmod, chown, cp, lchown, lstat, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileVolumeDriver } from '../src/index.js';

const NOBODY = 65534;
const repo = fileURLToPath(new URL('../../../', import.meta.url));
const fixture = fileURLToPath(new URL('./fixtures/other-user.mjs', import.meta.url));

/** Every entry under `dir` (not `dir` itself) whose owner or group is not NOBODY, with its uid:gid. */
async function notOwnedByNobody(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of await readdir(dir)) {
    const path = join(dir, name);
    const st = await lstat(path);
    if (st.uid !== NOBODY || st.gid !== NOBODY) out.push(`${path.slice(dir.length + 1)} ${st.uid}:${st.gid}`);
    if (st.isDirectory()) out.push(...(await notOwnedByNobody(path)).map((p) => `${name}/${p}`));
  }
  return out;
}

/**
 * Copies the built driver, what it imports and the fixture into a fresh 0755 directory: the
 * checkout may not be reachable by uid 65534 (a mktemp -d clone is 0700).
 */
async function installForNobody(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-shared-module-'));
  await chmod(dir, 0o755);
  const copy = (from: string, to: string) => cp(join(repo, from), join(dir, to), { recursive: true, dereference: true });
  for (const pkg of ['plugins/volume-file', 'packages/core']) {
    const name = pkg === 'packages/core' ? 'core' : 'volume-file';
    await copy(`${pkg}/package.json`, `node_modules/@cairn/${name}/package.json`);
    await copy(`${pkg}/dist`, `node_modules/@cairn/${name}/dist`);
  }
  for (const dep of ['inversify', '@inversifyjs', 'reflect-metadata', 'fs-ext']) await copy(`node_modules/${dep}`, `node_modules/${dep}`);
  await cp(fixture, join(dir, 'other-user.mjs'));
  for (const d of [join(dir, 'node_modules'), join(dir, 'node_modules/@cairn')]) await chmod(d, 0o755);
  return dir;
}

/** Runs the fixture as uid/gid 65534; resolves with its JSON line. */
function asNobody(moduleDir: string, args: string[]): Promise<{ line: any; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(moduleDir, 'other-user.mjs'), ...args], { uid: NOBODY, gid: NOBODY, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', () => resolve({ line: stdout.trim() ? JSON.parse(stdout.trim().split('\n')[0]!) : undefined, stderr }));
  });
}

// Needs root to run a process as another user; CI runs as root.
const isRoot = process.getuid?.() === 0;
if (!isRoot) console.warn('shared-directory: skipped: running a process as another user (uid 65534) needs root');
describe.runIf(isRoot)('a volumes directory of another user, used by root', () => {
  let base: string;
  let directory: string;
  let moduleDir: string;
  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), 'cairn-shared-'));
    await chmod(base, 0o755);
    directory = join(base, 'volumes-of-nobody');
    await mkdir(directory, 0o700);
    await chown(directory, NOBODY, NOBODY);
    moduleDir = await installForNobody();
  });
  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
    await rm(moduleDir, { recursive: true, force: true });
  });

  it('keeps the owner on everything root creates or rewrites there, so the owner lists, attaches and snapshots after root attached read-write', async () => {
    const root = new FileVolumeDriver({ directory });
    const v = await root.createVolume({ size: 1 << 20 });
    await root.changedBlockTracking.createCheckpoint(v.id);
    const a = await root.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, Buffer.alloc(4096, 0xaa));
    await root.detach(a.id); // rewrites the sidecar, saves the bitmap; the writer lock stays
    const s = await root.createSnapshot(v.id);

    // The clock probe stays root's: a process that may not change it reads the clock through a fresh file (core's drivers/stamp-clock.ts).
    expect((await notOwnedByNobody(directory)).filter((e) => !e.startsWith('volumes/.clock '))).toEqual([]);
    expect((await lstat(join(directory, 'volumes', `${v.id}.json`))).mode & 0o777, 'no mode widened').toBe(0o600);
    expect((await lstat(join(directory, 'volumes', `${v.id}.writer`))).mode & 0o777).toBe(0o600);

    const r = await asNobody(moduleDir, [directory, v.id, s.id]);
    expect(r.line, r.stderr).toEqual({
      ok: {
        listVolumes: [{ id: v.id, status: 'available' }],
        getVolume: 'available',
        attachRw: 'detached',
        checkpoints: 1,
        attachSnapshot: 0xaa,
        createVolume: 'available',
      },
    });
  });

  it('never gives the owner a file a symlink planted in the directory points to', async () => {
    const root = new FileVolumeDriver({ directory });
    const v = await root.createVolume({ size: 1 << 20 });
    const target = join(base, 'roots-file');
    await writeFile(target, 'secret', { mode: 0o600 });
    await symlink(target, join(directory, 'volumes', `${v.id}.writer`));
    await lchown(join(directory, 'volumes', `${v.id}.writer`), NOBODY, NOBODY); // planted by the owner
    const a = await root.attach({ kind: 'volume', id: v.id }, 'rw');
    await root.detach(a.id);
    const st = await lstat(target);
    expect({ uid: st.uid, gid: st.gid, mode: st.mode & 0o777 }).toEqual({ uid: 0, gid: 0, mode: 0o600 });
  });
});
