import { join } from 'node:path';
import { BackupManager, type BackupRecord, type VolumeFlowState } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { cairnJson, cairnSpawn, MiB, removeDir, tempDir, writeDeploymentConfig, writeRawImage } from './helpers.js';

const SIZE = 128 * MiB;

/**
 * A backup is `restoring` while any of its readers (BackupRecord.readers: one per BackupManager,
 * in any process) may be alive. A `cairn backup restore` process killed while it writes a volume
 * leaves that volume `restoring-backup` (and, restoring to a new volume, the volume and its intent):
 * they are settled as soon as that reader is found gone (by recovery, by another reader's claim,
 * by another reader's release), not only once the last reader has ended. Real processes (the
 * bundled CLI, SIGKILLed), a real posix repository and the file volume driver; the test process
 * is the reader that stays alive.
 */
describe('a restore process killed while other processes read its backup', () => {
  let cwd: string;
  let ctx: CliContext;
  let manager: BackupManager;
  let other: BackupManager;
  let id: string;
  const catalog = () => ctx.catalog();

  beforeAll(async () => {
    cwd = await tempDir();
    const config = await writeDeploymentConfig(cwd);
    await writeRawImage(join(cwd, 'src.raw'), SIZE);
    await cairnJson(['volume', 'import', join(cwd, 'src.raw'), '--name', 'src'], { cwd });
    id = (await cairnJson(['backup', 'create', 'src'], { cwd })).id as string;
    ctx = await CliContext.create({ config }, new Output({ quiet: true }));
    manager = await ctx.manager();
    // A second manager of this process: a reader entry of its own, as another process's would be.
    other = new BackupManager({ volumes: await ctx.volumes(), targets: { posix: await ctx.target('posix') }, catalog: await ctx.catalog() });
  }, 300_000);
  afterAll(async () => {
    await ctx?.close();
    await removeDir(cwd);
  });

  /** Holds a read of the backup by `m` until the returned function is called. */
  async function holdRead(m: BackupManager): Promise<{ claimed: BackupRecord; end: () => Promise<void> }> {
    let release!: () => void;
    const ends = new Promise<void>((r) => (release = r));
    let claimed!: (b: BackupRecord) => void;
    const reading = new Promise<BackupRecord>((r) => (claimed = r));
    const done = m.readBackup(id, async (b) => {
      claimed(b);
      await ends;
    });
    const record = await Promise.race([reading, done.then(() => Promise.reject(new Error('the read ended at once')))]);
    return {
      claimed: record,
      end: async () => {
        release();
        await done;
      },
    };
  }

  /**
   * Starts `cairn backup restore <id> ...args` for each run at once, and SIGKILLs them all once
   * each has laid `restoring-backup` over a volume its `mine` accepts (each is then among the
   * backup's readers, writing its volume; none has seen another dead). Resolves with those
   * volumes' states, in the order of `runs`.
   */
  async function killedRestores(runs: Array<{ args: string[]; mine: (volumeId: string) => boolean }>): Promise<VolumeFlowState[]> {
    const children = runs.map((r) => cairnSpawn(['backup', 'restore', id, ...r.args, '--json'], { cwd }));
    try {
      let states: Array<VolumeFlowState | undefined> = [];
      for (;;) {
        const all = (await (await catalog()).listVolumeStates()).filter((s) => s.backupId === id && s.status === 'restoring-backup');
        states = runs.map((r) => all.find((s) => r.mine(s.volumeId)));
        if (states.every((s) => s) || children.some((c) => c.child.exitCode !== null)) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      expect(states.every((s) => s), 'a restore never began writing').toBe(true);
      for (const { child } of children) child.kill('SIGKILL');
      for (const { child, exit } of children) {
        await exit;
        expect(child.signalCode, 'a restore ended before it was killed').toBe('SIGKILL');
      }
      return states as VolumeFlowState[];
    } finally {
      for (const { child } of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }

  /** One restore, killed as killedRestores does. */
  async function killedRestore(args: string[], mine: (volumeId: string) => boolean): Promise<VolumeFlowState> {
    return (await killedRestores([{ args, mine }]))[0]!;
  }

  async function stateOf(volumeId: string): Promise<VolumeFlowState | undefined> {
    return (await catalog()).getVolumeState(volumeId);
  }

  async function freshVolume(name: string): Promise<string> {
    return (await (await ctx.volumes()).createVolume({ name, size: SIZE })).id;
  }

  it('recovery while another reader lives: the dead restore’s existing volume goes error_restoring, its new volume is deleted, the backup stays restoring', async () => {
    const read = await holdRead(manager);
    try {
      const target = await freshVolume('rec-to');
      const known = new Set((await (await ctx.volumes()).listVolumes()).map((v) => v.id));
      const [, created] = await killedRestores([
        { args: ['--to', target], mine: (v) => v === target },
        { args: ['--new', '--name', 'rec-new'], mine: (v) => !known.has(v) && v !== target },
      ]);
      expect((await manager.getBackup(id)).readers).toHaveLength(3);

      const report = await manager.recover();
      expect(report.skipped).toContain(id);
      expect(report.errorRestoringVolumes).toContain(target);
      expect(report.removedVolumes).toContain(created.volumeId);
      expect(await stateOf(target)).toMatchObject({ status: 'error_restoring', backupId: id });
      expect((await (await ctx.volumes()).listVolumes()).map((v) => v.id)).not.toContain(created.volumeId);
      expect(await stateOf(created.volumeId)).toBeUndefined();
      const record = await manager.getBackup(id);
      expect(record.status).toBe('restoring');
      expect(record.readers?.map((r) => r.owner.pid)).toEqual([process.pid]);
    } finally {
      await read.end();
    }
    expect(await manager.getBackup(id)).toMatchObject({ status: 'available' });
  }, 300_000);

  it("another reader's claim while one more reader lives: the dead restore's volume goes error_restoring", async () => {
    const read = await holdRead(manager);
    try {
      const target = await freshVolume('claim-to');
      await killedRestore(['--to', target], (v) => v === target);
      expect(await stateOf(target)).toMatchObject({ status: 'restoring-backup' });
      const second = await holdRead(other);
      try {
        expect(second.claimed.readers).toHaveLength(2);
        expect(await stateOf(target)).toMatchObject({ status: 'error_restoring', backupId: id });
      } finally {
        await second.end();
      }
      expect(await manager.getBackup(id)).toMatchObject({ status: 'restoring' });
    } finally {
      await read.end();
    }
  }, 300_000);

  it("another reader's release while one more reader lives: the dead restore's volume goes error_restoring", async () => {
    const read = await holdRead(manager);
    try {
      const second = await holdRead(other);
      const target = await freshVolume('release-to');
      try {
        await killedRestore(['--to', target], (v) => v === target);
        expect(await stateOf(target)).toMatchObject({ status: 'restoring-backup' });
      } finally {
        await second.end();
      }
      expect(await stateOf(target)).toMatchObject({ status: 'error_restoring', backupId: id });
      const record = await manager.getBackup(id);
      expect(record.status).toBe('restoring');
      expect(record.readers).toHaveLength(1);
    } finally {
      await read.end();
    }
  }, 300_000);
});
