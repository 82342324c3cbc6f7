import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupManager, type BackupRecord, type VolumeFlowState } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { cairnJson, cairnSpawn, MiB, removeDir, tempDir, writeDeploymentConfig, writeRawImage } from './helpers.js';

const SIZE = 128 * MiB;

/** Whether every thread of process `pid` is stopped (`T` in /proc: SIGSTOP), so it changes nothing until SIGCONT or SIGKILL. */
async function allStopped(pid: number): Promise<boolean> {
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => undefined);
  if (tasks === undefined) return false; // ended: the caller sees its exit
  for (const task of tasks) {
    const stat = await readFile(`/proc/${pid}/task/${task}/stat`, 'utf8').catch(() => undefined);
    if (stat === undefined) continue; // a thread that ended
    if (stat[stat.lastIndexOf(')') + 2] !== 'T') return false;
  }
  return true;
}

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

  /** One `cairn backup restore <id> ...args` of a round: `mine` tells its volume; `newVolume` restores to a new one (it has an intent). */
  interface Run {
    args: string[];
    mine: (volumeId: string) => boolean;
    newVolume?: boolean;
  }

  /**
   * Starts `cairn backup restore <id> ...args` for each run `plan` makes, at once, and SIGKILLs them
   * all once each has laid `restoring-backup` over a volume its `mine` accepts (each is then among
   * the backup's readers, writing its volume; none has seen another dead). Resolves with those
   * volumes' states, in the order of the runs.
   *
   * A restore takes well under a second once it has laid its state, so each child is stopped
   * (SIGSTOP) as soon as its state is seen, and the others are waited for while it can do nothing.
   * Once every thread of every child is stopped, what each left is checked to be as when it was
   * seen (its state; a new volume's intent naming it): only then are they killed. A child that got
   * past its commit before it was stopped (a heavily loaded machine) makes the round prove
   * nothing: its children are let go on (SIGCONT) to end their restores, and `plan` makes a new
   * round, with volumes of its own.
   */
  async function killedRestores(plan: () => Promise<Run[]>): Promise<VolumeFlowState[]> {
    const failures: string[] = [];
    for (let round = 1; round <= 5; round++) {
      const runs = await plan();
      const children = runs.map((r) => cairnSpawn(['backup', 'restore', id, ...r.args, '--json'], { cwd }));
      let killed = false;
      try {
        const seen: Array<VolumeFlowState | undefined> = runs.map(() => undefined);
        let early: number | undefined;
        for (;;) {
          const all = (await (await catalog()).listVolumeStates()).filter((s) => s.backupId === id && s.status === 'restoring-backup');
          runs.forEach((r, i) => {
            const state = seen[i] ? undefined : all.find((s) => r.mine(s.volumeId));
            if (!state) return;
            children[i]!.child.kill('SIGSTOP');
            seen[i] = state;
          });
          early = children.findIndex((c, i) => !seen[i] && (c.child.exitCode !== null || c.child.signalCode !== null));
          if (seen.every((s) => s) || early >= 0) break;
          await new Promise((r) => setTimeout(r, 5));
        }
        if (early !== undefined && early >= 0) {
          const result = await children[early]!.exit;
          // A restore that failed proves a bug; one that succeeded was only quicker than this look.
          expect(result.code, `a restore failed before it began writing: ${result.stderr}`).toBe(0);
          failures.push(`round ${round}: a restore ended before its state was seen`);
          continue;
        }
        // Stopped once every thread is (a write under way when SIGSTOP came is then done), unless it ended meanwhile.
        for (const { child } of children) while (child.exitCode === null && child.signalCode === null && !(await allStopped(child.pid!))) await new Promise((r) => setTimeout(r, 5));
        const ended = children.find((c) => c.child.exitCode !== null || c.child.signalCode !== null);
        if (ended) throw new Error(`a stopped restore ended: ${JSON.stringify(await ended.exit)}`);
        const states = await (await catalog()).listVolumeStates();
        const intents = await (await catalog()).listNewVolumeIntents();
        const intact = runs.every(
          (r, i) =>
            states.some((s) => s.volumeId === seen[i]!.volumeId && s.status === 'restoring-backup' && s.since === seen[i]!.since) &&
            (!r.newVolume || intents.some((n) => n.backupId === id && n.reader?.owner.pid === children[i]!.child.pid)),
        );
        if (!intact) {
          failures.push(`round ${round}: a restore got past its commit before it was stopped`);
          continue;
        }
        for (const { child } of children) child.kill('SIGKILL');
        killed = true;
        for (const { child, exit } of children) {
          await exit;
          expect(child.signalCode, 'a restore ended before it was killed').toBe('SIGKILL');
        }
        return seen as VolumeFlowState[];
      } finally {
        // A round that proves nothing: its restores end as they would have (nothing left behind).
        if (!killed) {
          for (const { child } of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGCONT');
          await Promise.all(children.map((c) => c.exit));
        }
      }
    }
    throw new Error(`no round stopped every restore while it was writing: ${failures.join('; ')}`);
  }

  /** One restore to a fresh volume named `name`, killed as killedRestores does. */
  async function killedRestoreTo(name: string): Promise<VolumeFlowState> {
    const [state] = await killedRestores(async () => {
      const target = await freshVolume(name);
      return [{ args: ['--to', target], mine: (v) => v === target }];
    });
    return state!;
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
      const [existing, created] = await killedRestores(async () => {
        const to = await freshVolume('rec-to');
        const known = new Set((await (await ctx.volumes()).listVolumes()).map((v) => v.id));
        return [
          { args: ['--to', to], mine: (v) => v === to },
          { args: ['--new', '--name', 'rec-new'], mine: (v) => !known.has(v) && v !== to, newVolume: true },
        ];
      });
      const target = existing!.volumeId;
      expect((await manager.getBackup(id)).readers).toHaveLength(3);

      const report = await manager.recover();
      expect(report.skipped).toContain(id);
      expect(report.errorRestoringVolumes).toContain(target);
      expect(report.removedVolumes).toContain(created!.volumeId);
      expect(await stateOf(target)).toMatchObject({ status: 'error_restoring', backupId: id });
      expect((await (await ctx.volumes()).listVolumes()).map((v) => v.id)).not.toContain(created!.volumeId);
      expect(await stateOf(created!.volumeId)).toBeUndefined();
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
      const target = (await killedRestoreTo('claim-to')).volumeId;
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
      let target!: string;
      try {
        target = (await killedRestoreTo('release-to')).volumeId;
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
