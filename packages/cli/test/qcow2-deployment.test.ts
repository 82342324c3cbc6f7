import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CairnError } from '@cairn/core';
import { exitCodeFor } from '../src/exit-codes.js';
import { cairn, cairnJson, cairnSpawn, jsonError, MiB, removeDir, serveApi, tempDir, writeQcow2DeploymentConfig, writeRawImage } from './helpers.js';

/**
 * The bundled `cairn` with a config whose volume driver is the qcow2 plugin (real qemu-img and
 * qemu-storage-daemon): every command runs its own daemon, which the command stops when it ends.
 * The tests of this file run in order on one deployment.
 */
describe('cairn with the qcow2 volume driver', () => {
  let cwd: string;
  let raw: string;
  let image: Buffer;
  let diskId: string;
  let fullId: string;
  /** What the backup whose daemon was killed reported (set by the SIGKILL test). */
  let killed: { exit: number; code: string; message: string } | undefined;
  const SIZE = 64 * MiB;
  const run = (args: string[]) => cairn(args, { cwd });
  const json = <T = any>(args: string[]) => cairnJson<T>(args, { cwd });

  beforeAll(async () => {
    cwd = await tempDir('cairn-q-');
    // runtimeDir relative: resolved against the config's directory, as `directory` is.
    await writeQcow2DeploymentConfig(cwd);
    raw = join(cwd, 'disk.raw');
    image = await writeRawImage(raw, SIZE);
  });
  afterAll(() => removeDir(cwd));

  /** The daemons started under the runtime dir whose owner is `pid` (the owner file of @cairn/qmp's runtime dirs). */
  async function daemonsOf(pid: number): Promise<number[]> {
    const found: number[] = [];
    for (const name of await readdir(join(cwd, 'run')).catch(() => [] as string[])) {
      // Missing, or caught while it is being written (empty or cut short): not there yet, looked at again at the next poll.
      const owner = await readFile(join(cwd, 'run', name, 'owner'), 'utf8')
        .then((t) => JSON.parse(t) as { pid: number; daemonPid?: number })
        .catch(() => undefined);
      if (owner?.pid === pid && owner.daemonPid) found.push(owner.daemonPid);
    }
    return found;
  }

  /** True while a process with this pid exists. */
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };

  it('volume import makes a qcow2 volume; backups full and incremental (dirty bitmaps), restore byte-exact, volume delete', async () => {
    const { volume: v } = await json(['volume', 'import', raw, '--name', 'disk', '-q']);
    expect(v).toMatchObject({ name: 'disk', size: SIZE, status: 'available' });
    diskId = v.id;
    // The driver's own files, in the directory the config names.
    expect(await readdir(join(cwd, 'qcow2', 'volumes'))).toContain(`${diskId}.qcow2`);

    const full = await json(['backup', 'create', 'disk', '-q']);
    expect(full).toMatchObject({ status: 'available', incremental: false, size: SIZE });
    fullId = full.id;

    // Change 2 MiB through the driver (import --into writes only the blocks that differ).
    randomBytes(MiB).copy(image, 10 * MiB);
    randomBytes(MiB).copy(image, 50 * MiB + 4096);
    await writeFile(raw, image);
    await json(['volume', 'import', raw, '--into', 'disk', '-q']);

    const incr = await json(['backup', 'create', 'disk', '-i', '-q']);
    expect(incr).toMatchObject({ status: 'available', incremental: true, parentId: fullId });
    // Only what the bitmaps say changed is read: far less than the 64 MiB volume.
    expect(incr.stats.bytesRead).toBeGreaterThanOrEqual(2 * MiB);
    expect(incr.stats.bytesRead).toBeLessThanOrEqual(SIZE / 8);

    const restored = await json(['backup', 'restore', incr.id, '--new', '--name', 'copy', '-q']);
    expect(restored.volume).toMatchObject({ name: 'copy', size: SIZE });
    const out = join(cwd, 'copy.raw');
    await json(['volume', 'export', 'copy', out, '-q']);
    expect((await readFile(out)).equals(image)).toBe(true);

    expect(await json(['volume', 'delete', 'copy'])).toMatchObject({ deleted: restored.volume.id });
    expect((await json<{ name: string }[]>(['volume', 'list'])).map((x) => x.name)).toEqual(['disk']);
    expect(await readdir(join(cwd, 'qcow2', 'volumes'))).not.toContain(`${restored.volume.id}.qcow2`);
    // Every command stopped its daemon cleanly as it ended, which removes the daemon's runtime dir.
    expect(await readdir(join(cwd, 'run'))).toEqual([]);
  });

  it('cairn serve backs up a qcow2 volume through the REST API, and stops its daemon on SIGTERM', async () => {
    // Run from another directory: the config's relative runtimeDir is still its own `run`.
    const elsewhere = join(cwd, 'elsewhere');
    await mkdir(join(elsewhere, 'run'), { recursive: true });
    const server = await serveApi(elsewhere, ['--config', join(cwd, 'cairn.config.json')]);
    try {
      const started = await server.call('POST', '/v1/backups', { volumeId: 'disk', incremental: true });
      expect(started.status).toBe(202);
      const done = await server.call('GET', `/v1/jobs/${started.json.id}?wait=60`);
      expect(done.json).toMatchObject({ state: 'succeeded', result: { status: 'available', incremental: true, volumeId: diskId } });
      expect(done.json.result.stats.bytesRead).toBeLessThanOrEqual(SIZE / 8);
      expect(await daemonsOf(server.child.pid!)).toHaveLength(1);
    } finally {
      const end = await server.stop();
      expect(end.code, end.stderr).toBe(0);
    }
    // The daemon was stopped (and its runtime dir removed) with the server.
    expect(await daemonsOf(server.child.pid!)).toEqual([]);
    expect(await readdir(join(elsewhere, 'run'))).toEqual([]);
  });

  it('a daemon killed (SIGKILL) during a backup: the command fails with one error and its exit code, the record ends error, the volume and the next backup work', async () => {
    const victimRaw = join(cwd, 'victim.raw');
    const victimImage = await writeRawImage(victimRaw, 32 * MiB);
    await json(['volume', 'import', victimRaw, '--name', 'victim', '-q']);
    const base = await json(['backup', 'create', 'victim', '-q']);
    // Paced so that the backup is still reading when its daemon dies.
    const { child, exit } = cairnSpawn(['backup', 'create', 'victim', '--read-rate', '4MiB', '--json'], { cwd });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    // Reading: a progress line (stderr is no terminal: one line every 2 s) with bytes done.
    const reading = () => /^backup: [1-9][^\n]* \/ /m.test(stderr);
    let daemons: number[] = [];
    for (let i = 0; i < 600 && !(daemons.length > 0 && reading()); i++) {
      await new Promise((r) => setTimeout(r, 50));
      daemons = await daemonsOf(child.pid!);
    }
    expect(daemons, stderr).toHaveLength(1);
    expect(reading(), stderr).toBe(true);
    process.kill(daemons[0]!, 'SIGKILL');
    const r = await exit;
    const err = jsonError(r);
    killed = { exit: r.code, code: err.code, message: err.message };
    expect(r.code, r.stderr).toBe(exitCodeFor(new CairnError(err.code as CairnError['code'], err.message)));
    expect(r.code).not.toBe(0);
    expect(err.message).toContain('[qcow2]');

    const backups = await json<{ id: string; status: string }[]>(['backup', 'list', '--volume', 'victim', '--sort', 'createdAt']);
    expect(backups.map((b) => b.status)).toEqual(['available', 'error']);
    expect(await json(['volume', 'show', 'victim'])).toMatchObject({ status: 'available' });
    expect(alive(daemons[0]!)).toBe(false);

    // The next backup works, and holds the volume's data.
    const next = await json(['backup', 'create', 'victim', '-i', '-q']);
    expect(next).toMatchObject({ status: 'available', incremental: true, parentId: base.id });
    // The dead daemon left its bitmaps unsaved (in use): not trusted, so everything allocated is read.
    expect(next.stats.bytesRead).toBeGreaterThanOrEqual(16 * MiB);
    const restored = await json(['backup', 'restore', next.id, '--new', '--name', 'after-kill', '-q']);
    const out = join(cwd, 'after-kill.raw');
    await json(['volume', 'export', restored.volume.id, out, '-q']);
    expect((await readFile(out)).equals(victimImage)).toBe(true);
  });

  // A device whose daemon died fails with UNAVAILABLE (BaseBlockDevice.lose), not the INVALID_INPUT
  // of a device its caller closed.
  it('a daemon killed during a backup is UNAVAILABLE (exit 6), not INVALID_INPUT', () => {
    expect(killed).toBeDefined();
    expect({ exit: killed!.exit, code: killed!.code }, killed!.message).toEqual({ exit: 6, code: 'UNAVAILABLE' });
  });

  it('a config in a directory too deep for its relative runtimeDir (unix sockets ≤ 107 bytes): a backup is INVALID_INPUT (exit 2) naming runtimeDir, before any record is written', async () => {
    // The same volumes and repository, from a config whose directory makes `run/cairn-qsd-XXXXXX/qmp.sock` 108 bytes or more.
    const deep = join(cwd, 'd'.repeat(Math.max(1, 90 - cwd.length)));
    await mkdir(join(deep, 'run'), { recursive: true });
    const config = join(deep, 'cairn.config.json');
    await writeFile(config, JSON.stringify({
      volumeDrivers: { qcow2: { plugin: 'qcow2', options: { directory: join(cwd, 'qcow2'), runtimeDir: 'run' } } },
      targets: { posix: { plugin: 'posix', options: { directory: join(cwd, 'repo') } } },
    }));
    const before = await json<{ id: string }[]>(['backup', 'list', '--volume', 'disk']);
    const r = await run(['backup', 'create', 'disk', '--config', config, '--json']);
    expect(r.code, r.stderr).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT' });
    expect(jsonError(r).message).toContain(`runtimeDir ${join(deep, 'run')}`);
    // Nothing was started or written: no backup record (not even one ended error), no daemon dir.
    expect(await json<{ id: string }[]>(['backup', 'list', '--volume', 'disk'])).toEqual(before);
    expect(await readdir(join(deep, 'run'))).toEqual([]);
  });

  it('a config naming qcow2 options wrongly is INVALID_INPUT (exit 2) naming the option; a file-only config never starts qemu', async () => {
    const bad = join(cwd, 'bad.json');
    await writeFile(bad, JSON.stringify({ volumeDrivers: { q: { plugin: 'qcow2', options: { directory: 'qcow2', commandTimeoutMs: -1 } } }, targets: { posix: { plugin: 'posix', options: { directory: 'repo' } } } }));
    const r = await run(['volume', 'list', '--config', bad, '--json']);
    expect(r.code, r.stderr).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT' });
    expect(jsonError(r).message).toContain('commandTimeoutMs');

    // A deployment of the file driver needs no qemu program: none is on its PATH here.
    const plain = join(cwd, 'plain.json');
    await writeFile(plain, JSON.stringify({ volumeDrivers: { file: { plugin: 'file', options: { directory: 'files' } } }, targets: { posix: { plugin: 'posix', options: { directory: 'repo2', repository: { init: true } } } } }));
    const env = { PATH: '/nonexistent' };
    const v = await cairnJson(['volume', 'create', 'f', '--size', '1MiB', '--config', plain], { cwd, env });
    expect(await cairnJson(['backup', 'create', v.id, '-q', '--config', plain], { cwd, env })).toMatchObject({ status: 'available' });
  });
});
