import { readdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentOwner } from '@cairn/core';
import { removeDeadTempDirs } from '../src/io/owned-temp-dir.js';
import { removeDir, tempDir } from './helpers.js';
import { deadOwner, forgeStagingDir } from './helpers-staging.js';

/**
 * Two machines may share a host name (two VMs called `localhost`) and a directory where owned
 * temporary directories are made (a shared disk): an owner file names its machine id, and a
 * directory of another machine (another machine id under another boot id) is never swept from
 * here; under this boot id (one kernel) the machine id is not compared. A machine id that
 * is not a non-empty string makes the owner file unreadable: left alone.
 */
describe('removeDeadTempDirs: owners of other machines under this host name', () => {
  let base: string;
  beforeAll(async () => (base = await tempDir('cairn-machines-')));
  afterAll(() => removeDir(base));

  it('keeps the directory of another machine id, removes that of an earlier boot of this machine (or of an owner without a machine id)', async () => {
    const me = currentOwner();
    expect(me.machineId).toMatch(/^[0-9a-f]{32}$/);
    const dead = await deadOwner();
    expect(dead.machineId).toBe(me.machineId);
    const { machineId: _m, ...oldDead } = dead;
    const earlierBoot = { bootId: 'an-earlier-boot' };
    await forgeStagingDir(join(base, 'cairn-export-TWIN01'), { ...dead, ...earlierBoot, machineId: `not-${me.machineId}` });
    await forgeStagingDir(join(base, 'cairn-export-KERNL1'), { ...dead, machineId: `not-${me.machineId}` }); // this boot: one kernel, the machine id is not compared
    await forgeStagingDir(join(base, 'cairn-export-BADID1'), { ...dead, ...earlierBoot, machineId: 42 } as never);
    await forgeStagingDir(join(base, 'cairn-export-BADID2'), { ...dead, ...earlierBoot, machineId: '' });
    await forgeStagingDir(join(base, 'cairn-export-BOOT01'), { ...dead, ...earlierBoot });
    await forgeStagingDir(join(base, 'cairn-export-OLDBT1'), { ...oldDead, ...earlierBoot }); // written before machine ids were kept
    await forgeStagingDir(join(base, 'cairn-export-DEAD01'), dead);
    await forgeStagingDir(join(base, 'cairn-export-HOST01'), { ...dead, host: `not-${hostname()}` });

    const removed = await removeDeadTempDirs('cairn-export-', base);
    expect(removed.map((d) => d.slice(base.length + 1)).sort()).toEqual(['cairn-export-BOOT01', 'cairn-export-DEAD01', 'cairn-export-KERNL1', 'cairn-export-OLDBT1']);
    expect((await readdir(base)).sort()).toEqual(['cairn-export-BADID1', 'cairn-export-BADID2', 'cairn-export-HOST01', 'cairn-export-TWIN01']);
  });
});
