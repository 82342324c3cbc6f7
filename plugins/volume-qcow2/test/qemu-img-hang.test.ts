import { chmod, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, overlaysIn, pattern, tempDir } from './helpers.js';

// Hung storage (a dead NFS server under the directory) makes qemu-img hang. Here the driver's own
// qemu-img child freezes itself: the driver runs a wrapper (option `qemuImg`) that, once, when its
// command is the one armed by a `freeze-<command>` file, writes its pid and SIGSTOPs itself, then
// execs the real qemu-img (were it ever continued). Metadata runs (create, check) must fail with
// UNAVAILABLE after `qemuImgTimeoutMs`, a snapshot copy (convert) after `qemuImgStallMs` without
// progress; the frozen child must be gone, nothing half-made may stay, and the volume's lock and
// the image's hold must be let go (the same call works right after).

const SIZE = 8 * MiB;
const BOUND = 1_000;

/** Whether the process `pid` still exists (a reaped child is gone). */
const exists = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe.skipIf(missingQemu.length > 0)(`hung qemu-img (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  let d: Qcow2VolumeDriver;
  /** The wrapper's control directory: `freeze-<command>` arms it, `pid` names the child it froze. */
  let ctl: string;

  /**
   * Arms the wrapper: the driver's next qemu-img `command` child stops itself (SIGSTOP) before
   * qemu-img runs, or — `after` — once qemu-img has done its work (as if its last write or close
   * hung: what it made is there).
   */
  const freezeNext = (command: string, when: 'before' | 'after' = 'before'): Promise<void> => writeFile(join(ctl, `${when === 'before' ? 'freeze' : 'after'}-${command}`), '');
  /** The pid of the child that froze itself, or undefined if none did. */
  const frozenPid = async (): Promise<number | undefined> => {
    const text = await readFile(join(ctl, 'pid'), 'utf8').catch(() => undefined);
    return text === undefined ? undefined : Number(text.trim());
  };
  /** The call froze a child, and that child is gone (the driver killed and reaped it). */
  const expectFrozenChildGone = async (): Promise<void> => {
    const pid = await frozenPid();
    expect(pid).toBeGreaterThan(0);
    expect(exists(pid!)).toBe(false);
  };

  beforeEach(async () => {
    ctl = await tempDir('cairn-qemu-img-ctl-');
    const wrapper = join(ctl, 'qemu-img');
    await writeFile(
      wrapper,
      [
        '#!/bin/sh',
        `ctl='${ctl}'`,
        'frozen() { echo $$ > "$ctl/pid.tmp" && mv "$ctl/pid.tmp" "$ctl/pid" && kill -STOP $$; }',
        'if [ -n "$1" ] && mv "$ctl/freeze-$1" "$ctl/armed" 2>/dev/null; then frozen; fi',
        'if [ -n "$1" ] && mv "$ctl/after-$1" "$ctl/armed" 2>/dev/null; then qemu-img "$@"; status=$?; frozen; exit $status; fi',
        'exec qemu-img "$@"',
        '',
      ].join('\n'),
    );
    await chmod(wrapper, 0o755);
    d = new Qcow2VolumeDriver({ directory: await tempDir(), qemuImg: wrapper, qemuImgTimeoutMs: BOUND, qemuImgStallMs: BOUND });
  });
  afterEach(async () => {
    const pid = await frozenPid();
    if (pid && exists(pid)) process.kill(pid, 'SIGKILL'); // the driver's own child, named by its pid file
    await d.close();
    await rm(d.directory, { recursive: true, force: true });
    await rm(ctl, { recursive: true, force: true });
  });

  for (const when of ['before', 'after'] as const) {
    it(`createVolume whose qemu-img create hangs (${when} making the image) fails with UNAVAILABLE naming create, leaves no image or sidecar, and the next createVolume works`, async () => {
      await freezeNext('create', when);
      await expect(d.createVolume({ size: SIZE, name: 'hung' })).rejects.toMatchObject({ code: 'UNAVAILABLE', driver: 'qcow2', message: expect.stringContaining('qemu-img create') });
      await expectFrozenChildGone();
      expect(await readdir(join(d.directory, 'volumes'))).toEqual([]);
      expect(await d.listVolumes()).toEqual([]);
      const v = await d.createVolume({ size: SIZE });
      expect((await d.listVolumes()).map((x) => x.id)).toEqual([v.id]);
    });
  }

  it('attach whose qemu-img check hangs fails with UNAVAILABLE naming check, opens nothing, and the next attach of the volume works', async () => {
    const v = await d.createVolume({ size: SIZE });
    await freezeNext('check');
    const hung = d.attach({ kind: 'volume', id: v.id }, 'rw');
    const failed = expect(hung).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('qemu-img check') });
    while ((await frozenPid()) === undefined) await new Promise((r) => setTimeout(r, 10));
    // A call on the same volume made while the check hangs queues behind it, and runs once it failed.
    const extended = d.extendVolume(v.id, 2 * SIZE);
    await failed;
    await expectFrozenChildGone();
    expect(await extended).toMatchObject({ id: v.id, size: 2 * SIZE, status: 'available' });
    // The volume's lock was let go, no node or attachment was left: a rw attach succeeds.
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, pattern(4096, 7));
    expect(Buffer.from(await a.device.read(0, 4096))).toEqual(pattern(4096, 7));
    await d.detach(a.id);
  });

  it('a snapshot copy whose qemu-img convert stalls fails with UNAVAILABLE naming convert, leaves no copy, and lets the image go', async () => {
    const v = await d.createVolume({ size: SIZE });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, pattern(MiB, 3));
    await d.detach(a.id);
    await freezeNext('convert');
    await expect(d.createSnapshot(v.id, 'hung')).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('qemu-img convert') });
    await expectFrozenChildGone();
    expect(await readdir(join(d.directory, 'snapshots'))).toEqual([]);
    expect(await d.listSnapshots(v.id)).toEqual([]);
    // The daemon's hold on the image was released: the copy can be made, and the volume deleted after it.
    const s = await d.createSnapshot(v.id, 'ok');
    const sa = await d.attach({ kind: 'snapshot', id: s.id }, 'ro');
    expect(Buffer.from(await sa.device.read(0, MiB)).equals(pattern(MiB, 3))).toBe(true); // toEqual on 1 MiB is slow
    await d.detach(sa.id);
    await d.deleteSnapshot(s.id);
    await d.deleteVolume(v.id);
    expect(await d.listVolumes()).toEqual([]);
  });

  for (const when of ['before', 'after'] as const) {
    it(`a view whose overlay's qemu-img create hangs (${when} making the overlay) fails with UNAVAILABLE, leaves no overlay, and the next view of the volume works`, async () => {
      const v = await d.createVolume({ size: SIZE });
      const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
      await freezeNext('create', when);
      await expect(d.createSnapshot(v.id)).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('qemu-img create') });
      await expectFrozenChildGone();
      expect(await overlaysIn(d.directory)).toEqual([]);
      expect(await d.listSnapshots(v.id)).toEqual([]);
      const s = await d.createSnapshot(v.id);
      expect((await d.listSnapshots(v.id)).map((x) => x.id)).toEqual([s.id]);
      await d.deleteSnapshot(s.id);
      await d.detach(a.id);
    });
  }
});
