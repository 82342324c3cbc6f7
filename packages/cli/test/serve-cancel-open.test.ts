import { existsSync } from 'node:fs';
import { readdir, rename, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fuseUsable, hangingFuseEachTest } from '../../qmp/test/fixtures/hanging-fuse-server.js';
import { within } from '../../core/test/settle.js';
import { cairnJson, cairnSpawn, MiB, tempDir, writeRawImage } from './helpers.js';

// `cairn backup serve` took SIGINT/SIGTERM only once the export listened: one while it opened
// the backup from a store that hangs (a repository on a dead NFS mount) killed it outright,
// leaving its shared lock in the repository. It now takes them from the start: the opening ends
// CANCELLED (exit 130), its lock released, no socket made. Made for real: the repository's
// manifests/ is a symlink to a FUSE mount whose server never answers a lookup
// (packages/qmp/test/fixtures/hanging-fuse.mjs), so reading the manifest hangs in the kernel.
// Needs root and /dev/fuse.
const fuse = hangingFuseEachTest(fuseUsable, () => tempDir('cairn-serve-hang-'));

describe.skipIf(!fuseUsable)('cairn backup serve: a signal while the backup is being opened', () => {
  it.each(['SIGINT', 'SIGTERM'] as const)('%s while the manifest read hangs ends CANCELLED, exit 130; no lock left in the repository, no socket', async (sig) => {
    const cwd = fuse.dir;
    await writeRawImage(join(cwd, 'src.raw'), 1 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'src.raw'), '--name', 'src'], { cwd });
    const backupId: string = (await cairnJson(['backup', 'create', 'src'], { cwd })).id;
    const repo = join(cwd, '.cairn', 'repository');
    await rename(join(repo, 'manifests'), join(repo, 'manifests.away'));
    await symlink(fuse.mountPoint, join(repo, 'manifests'));

    const socket = join(cwd, 'b.sock');
    const { child, exit } = cairnSpawn(['backup', 'serve', backupId, '--socket', socket, '--json'], { cwd });
    let stderr = '';
    const reported = new Promise<void>((resolve) => {
      child.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('"CANCELLED"')) resolve();
      });
    });
    try {
      await fuse.printed(`hung ${backupId}`); // holds its lock, waits for the manifest
      expect(await readdir(join(repo, 'locks'))).toHaveLength(1);
      child.kill(sig);
      // The command is done once it reported; its process ends when the read stuck in the kernel
      // does (the FUSE server killed below). A bound, not a timing: the old code never reported.
      await within(reported, 30_000).catch(() => undefined);
      expect(stderr).toContain(`${sig}: cancelling backup serve`);
      expect(JSON.parse(stderr.trim().split('\n').at(-1)!).error).toMatchObject({ code: 'CANCELLED' });
      expect(await readdir(join(repo, 'locks')), 'the lock was released').toEqual([]);
      expect(existsSync(socket), 'no socket').toBe(false);
    } finally {
      fuse.kill();
    }
    const r = await exit;
    expect(r.code, r.stderr).toBe(130);
    expect(await readdir(join(repo, 'locks'))).toEqual([]);
    expect(existsSync(socket)).toBe(false);
  }, 90_000);
});
