import { execFileSync, spawn } from 'node:child_process';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { currentOwner, processStartTime, type ProcessOwner } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, cairnSpawn, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';
import { deadOwner, forgeStagingDir } from './helpers-staging.js';

/**
 * Staging directories (`cairn-archive-*` in the staging directory: here `--staging-dir`) left by a process that was
 * killed (SIGKILL, OOM, a crash: no cleanup ran) are removed by the next staging, and only those:
 * never one whose owner may run (this host's live process, another host, another pid namespace),
 * never anything that is not a Cairn staging directory.
 */
describe('staging directories of dead processes', () => {
  let cwd: string;
  let tmp: string;
  let backupId: string;
  const env = () => ({ TMPDIR: tmp });
  const stagings = async () => (await readdir(tmp)).filter((n) => n.startsWith('cairn-archive-')).sort();

  beforeAll(async () => {
    cwd = await tempDir();
    tmp = join(cwd, 'tmp');
    await mkdir(tmp);
    await writeRawImage(join(cwd, 'disk.raw'), 128 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'disk.raw'), '--name', 'disk'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'disk'], { cwd })).id;
  }, 300_000);
  afterAll(async () => {
    await removeDir(cwd);
  });

  /** Writes `<tmp>/<name>/cairn-staging.json` naming `owner`, as a staging of `owner` would. */
  const forged = (name: string, owner: ProcessOwner | string) => forgeStagingDir(join(tmp, name), owner);

  it('an export killed with SIGKILL leaves its staging, which the next export removes; live, foreign and non-Cairn directories stay', async () => {
    // 1. A real export, killed with SIGKILL while it restores into its staging volume.
    const out = join(cwd, 'out');
    await mkdir(out);
    const { child, exit } = cairnSpawn(['backup', 'export', backupId, '--archive', join(out, 'a.tar'), '--staging-dir', tmp, '--json'], { cwd, env: env() });
    let killedStaging: string | undefined;
    for (let i = 0; i < 1500 && !killedStaging; i++) {
      for (const name of await stagings()) {
        const volumes = await readdir(join(tmp, name, 'volumes')).catch(() => []);
        if (volumes.length > 0) killedStaging = name; // the staging volume exists: the restore is under way
      }
      if (!killedStaging) await new Promise((r) => setTimeout(r, 10));
    }
    expect(killedStaging, 'the export never staged').toBeDefined();
    const killedPid = child.pid!;
    child.kill('SIGKILL');
    expect((await exit).code).not.toBe(0);
    expect(await stagings()).toEqual([killedStaging]); // no cleanup ran
    // The staging names its owner: the killed process.
    const doc = JSON.parse(await readFile(join(tmp, killedStaging!, 'cairn-staging.json'), 'utf8'));
    expect(doc.owner).toMatchObject({ host: hostname(), pid: killedPid, startTime: expect.any(Number) });

    // 2. Beside it, directories that must stay, and two more of dead owners.
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 120_000)'], { stdio: 'ignore' });
    try {
      await new Promise((r) => sleeper.once('spawn', r));
      const live = { ...currentOwner(), pid: sleeper.pid!, startTime: processStartTime(sleeper.pid!) };
      const dead = await deadOwner();
      const me = currentOwner();
      await forged('cairn-archive-LIVE01', live); // a live process of this host
      await forged('cairn-archive-HOST01', { ...dead, host: `not-${hostname()}` }); // another host: cannot be judged from here
      await forged('cairn-archive-PNS001', { ...dead, pidNamespace: (me.pidNamespace ?? 0) + 1 }); // another container
      await forged('cairn-archive-REUSE1', { ...live, startTime: live.startTime! - 1 }); // the pid now names another process
      await forged('cairn-archive-DEAD01', dead); // exited
      await forged('cairn-archive-BOOT01', { ...dead, pid: sleeper.pid!, bootId: 'an-earlier-boot' }); // an earlier boot of this host
      await forged('cairn-archive-JUNK01', '{"format": "cairn-staging/1", "owner": {"pid": "12"}'); // not a readable owner
      await forged('cairn-archive-OTHER1', JSON.stringify({ format: 'something-else', owner: dead }));
      await forged('cairn-archive-longer-name', dead); // not a name mkdtemp makes
      await forged('other-dir', dead); // not a staging at all
      await mkdir(join(tmp, 'cairn-archive-NOOWNR')); // an unowned directory (older versions', or one being created)
      await writeFile(join(tmp, 'cairn-archive-FILE01'), 'not a directory');
      await symlink(join(tmp, 'other-dir'), join(tmp, 'cairn-archive-LINK01')); // a link to a directory of a dead owner

      // 3. The next export: succeeds, and removes the stagings of dead owners only.
      const result = await cairnJson(['backup', 'export', backupId, '--archive', join(out, 'b.tar'), '--staging-dir', tmp], { cwd, env: env() });
      expect(result.backupId).toBe(backupId);
      expect(await stagings()).toEqual(
        ['cairn-archive-FILE01', 'cairn-archive-HOST01', 'cairn-archive-JUNK01', 'cairn-archive-LINK01', 'cairn-archive-LIVE01', 'cairn-archive-NOOWNR', 'cairn-archive-OTHER1', 'cairn-archive-PNS001', 'cairn-archive-longer-name'].sort(),
      );
      expect(await readdir(join(tmp, 'other-dir'))).toEqual(['cairn-staging.json']);
    } finally {
      sleeper.kill('SIGKILL');
    }
  }, 120_000);

  it("a volume import killed with SIGKILL while it converts a qcow2 leaves its cairn-import- directory, which the next import removes; a live owner's stays", async () => {
    const qcow = join(cwd, 'disk.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(cwd, 'disk.raw'), qcow]);
    const imports = async () => (await readdir(tmp)).filter((n) => n.startsWith('cairn-import-')).sort();
    // 1. A real import, killed with SIGKILL once the volume's NBD socket for qemu-img is in its directory.
    const { child, exit } = cairnSpawn(['volume', 'import', qcow, '--name', 'killed', '--json'], { cwd, env: env() });
    let killedDir: string | undefined;
    for (let i = 0; i < 3000 && !killedDir; i++) {
      for (const name of await imports()) {
        if ((await readdir(join(tmp, name)).catch((): string[] => [])).includes('nbd.sock')) killedDir = name;
      }
      if (!killedDir) await new Promise((r) => setTimeout(r, 5));
    }
    expect(killedDir, 'the import never converted').toBeDefined();
    child.kill('SIGKILL');
    expect((await exit).code).not.toBe(0);
    expect(await imports()).toEqual([killedDir]); // no cleanup ran
    // 2. Beside it, the directory of a live owner (this process), which must stay.
    await forged('cairn-import-LIVE01', currentOwner());

    // 3. The next import succeeds and removes the dead owner's directory only.
    const r = await cairnJson(['volume', 'import', qcow, '--name', 'again'], { cwd, env: env() });
    expect(r).toMatchObject({ format: 'qcow2', created: true });
    expect(await imports()).toEqual(['cairn-import-LIVE01']);
  }, 120_000);
});
