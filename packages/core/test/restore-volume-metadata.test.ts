import { describe, expect, it } from 'vitest';
import { MiB, expectCode, filledVolume, rig } from './helpers.js';
import { CairnError, assertCallerVolumeMetadata, type MemoryVolumeDriver } from '../src/index.js';

/**
 * A restore into an existing volume gives it the backup's key/value metadata, as Cinder's
 * BackupMetadataAPI.put does (keys the backup lacks removed), once the data is restored, and
 * never after a failure; Cairn's own `cairn.*` keys stay as the volume has them. A caller changes
 * a volume's metadata through BackupManager.updateVolumeMetadata.
 */

/** A rig with a backup of a volume carrying `{tier: gold, app: db}` (and a `cairn.` key of its own) and a target volume with other metadata. */
async function metadataRig() {
  const r = rig();
  const src = await filledVolume(r.volumes, 2 * MiB, 1);
  await r.volumes.setVolumeMetadata(src.id, { tier: 'gold', app: 'db', 'cairn.restore-job': 'job-of-the-source' });
  const b = await r.manager.backup({ volumeId: src.id });
  const target = await r.volumes.createVolume({ size: 2 * MiB, name: 'target', metadata: { tier: 'silver', owner: 'bob', 'cairn.restore-job': 'job-of-the-target' } });
  return { ...r, src, b, target };
}

/** Takes the capability away, as a driver that lacks it. */
function withoutCapability(volumes: MemoryVolumeDriver): void {
  Object.defineProperty(volumes, 'capabilities', { value: { ...volumes.capabilities, volumeMetadata: false } });
  Object.defineProperty(volumes, 'setVolumeMetadata', { value: undefined });
}

describe('restore into an existing volume: metadata', () => {
  it("replaces the volume's metadata with the backup's (keys the backup lacks removed), keeping the volume's own cairn.* keys", async () => {
    const { manager, volumes, b, target } = await metadataRig();
    const result = await manager.restore({ backupId: b.id, volumeId: target.id });
    const expected = { tier: 'gold', app: 'db', 'cairn.restore-job': 'job-of-the-target' };
    expect((await volumes.getVolume(target.id)).metadata).toEqual(expected);
    expect(result.volume.metadata).toEqual(expected);
    expect(result.metadataKept).toBeUndefined();
    expect((await volumes.getVolume(target.id)).name).toBe('target'); // an existing volume keeps its name
  });

  it('a restore that fails once it has written leaves the metadata as it was (the volume error_restoring)', async () => {
    const { manager, volumes, service, b, target } = await metadataRig();
    service.restore = async (_backup, device) => {
      await device.write(0, Buffer.alloc(64 * 1024, 7));
      throw new Error('backend exploded mid-restore');
    };
    await expectCode(manager.restore({ backupId: b.id, volumeId: target.id }), 'INTERNAL');
    expect((await volumes.getVolume(target.id)).metadata).toEqual(target.metadata);
    expect((await manager.getVolume(target.id)).status).toBe('error_restoring');
  });

  it('a restore whose flush fails (the data not durable) leaves the metadata as it was', async () => {
    const { manager, volumes, b, target } = await metadataRig();
    const attach = volumes.attach.bind(volumes);
    volumes.attach = async (t, mode) => {
      const a = await attach(t, mode);
      a.device.flush = async () => {
        throw new CairnError('UNAVAILABLE', 'flush failed', { driver: 'memory' });
      };
      return a;
    };
    await expectCode(manager.restore({ backupId: b.id, volumeId: target.id }), 'UNAVAILABLE');
    expect((await volumes.getVolume(target.id)).metadata).toEqual(target.metadata);
  });

  it('a failed metadata replacement fails the restore (error_restoring) and leaves the old metadata', async () => {
    const { manager, volumes, b, target } = await metadataRig();
    volumes.setVolumeMetadata = async () => {
      throw new CairnError('UNAVAILABLE', 'sidecar write failed', { driver: 'memory' });
    };
    await expectCode(manager.restore({ backupId: b.id, volumeId: target.id }), 'UNAVAILABLE');
    expect((await volumes.getVolume(target.id)).metadata).toEqual(target.metadata);
    expect((await manager.getVolume(target.id)).status).toBe('error_restoring');
  });

  it('with a driver that cannot replace metadata, the volume keeps its own and the result says so (metadataKept)', async () => {
    const { manager, volumes, b, target } = await metadataRig();
    withoutCapability(volumes);
    const result = await manager.restore({ backupId: b.id, volumeId: target.id });
    expect((await volumes.getVolume(target.id)).metadata).toEqual(target.metadata);
    expect(result.metadataKept).toBe(true);
    // A new volume gets the backup's at its creation either way.
    const fresh = await manager.restore({ backupId: b.id, newVolume: {} });
    expect(fresh.metadataKept).toBeUndefined();
    expect(fresh.volume.metadata).toMatchObject({ tier: 'gold', app: 'db' });
  });
});

describe('BackupManager.updateVolumeMetadata', () => {
  it('replaces, sets and unsets user keys; cairn.* keys stay', async () => {
    const { manager, target } = await metadataRig();
    expect((await manager.updateVolumeMetadata(target.id, { replace: { a: '1', b: '2' } })).metadata).toEqual({ a: '1', b: '2', 'cairn.restore-job': 'job-of-the-target' });
    expect((await manager.updateVolumeMetadata(target.id, { set: { c: '3', a: 'x' }, unset: ['b', 'absent'] })).metadata).toEqual({
      a: 'x',
      c: '3',
      'cairn.restore-job': 'job-of-the-target',
    });
  });

  it('refuses bad input with INVALID_INPUT and changes nothing', async () => {
    const { manager, volumes, target } = await metadataRig();
    const bad: unknown[] = [
      { replace: { a: 1 } },
      { replace: null },
      { replace: ['a'] },
      { set: { 'cairn.restore-job': 'mine' } },
      { unset: ['cairn.restore-job'] },
      { replace: { 'cairn.x': 'y' } },
      { replace: {}, set: {} },
      { unset: [1] },
      null,
    ];
    for (const change of bad) await expectCode(manager.updateVolumeMetadata(target.id, change as never), 'INVALID_INPUT');
    expect((await volumes.getVolume(target.id)).metadata).toEqual(target.metadata);
  });

  it("holds keys and values to Cinder's limits: an empty key, or a key or value over 255 characters, is INVALID_INPUT naming the key, and nothing changes", async () => {
    const { manager, volumes, target } = await metadataRig();
    const long = 'k'.repeat(256);
    const bad: [unknown, string][] = [
      [{ replace: { '': 'x' } }, 'empty_key'],
      [{ set: { '': 'x' } }, 'empty_key'],
      [{ set: { [long]: 'v' } }, 'key_too_long'],
      [{ replace: { k: 'v'.repeat(256) } }, 'value_too_long'],
      [{ set: { k: '\u{1F600}'.repeat(256) } }, 'value_too_long'], // characters, not UTF-16 units
    ];
    for (const [change, reason] of bad) {
      await expect(manager.updateVolumeMetadata(target.id, change as never)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { reason } });
    }
    expect((await volumes.getVolume(target.id)).metadata).toEqual(target.metadata);
    // At the limits: accepted (a 255-character key and value, 255 characters that take 510 UTF-16 units).
    const key = 'k'.repeat(255);
    const at = { [key]: 'v'.repeat(255), emoji: '\u{1F600}'.repeat(255) };
    expect((await manager.updateVolumeMetadata(target.id, { replace: at })).metadata).toEqual({ ...at, 'cairn.restore-job': 'job-of-the-target' });
  });

  it('a replace named with nothing in it ({replace: undefined}) is INVALID_INPUT (not_object), never a replacement by no keys', async () => {
    const { manager, volumes, target } = await metadataRig();
    await expect(manager.updateVolumeMetadata(target.id, { replace: undefined } as never)).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      details: { field: 'metadata', reason: 'not_object' },
    });
    expect((await volumes.getVolume(target.id)).metadata).toEqual(target.metadata);
    // An absent set is no change, as before.
    expect((await manager.updateVolumeMetadata(target.id, { set: undefined, unset: ['owner'] })).metadata).toEqual({ tier: 'silver', 'cairn.restore-job': 'job-of-the-target' });
  });

  it('a key holding a control character (NUL, escape, newline, DEL, C1) is INVALID_INPUT (control_character, the code point), through every door; nothing changes', async () => {
    const { manager, volumes, target } = await metadataRig();
    const bad: [unknown, string, string][] = [
      [{ set: { 'a\u0000b': 'v' } }, 'set', 'U+0000'],
      [{ replace: { 'ok': 'v', '\u001b[31m': 'v' } }, 'metadata', 'U+001B'],
      [{ set: { 'line\nbreak': 'v' } }, 'set', 'U+000A'],
      [{ set: { 'del\u007f': 'v' } }, 'set', 'U+007F'],
      [{ set: { 'c1\u0085': 'v' } }, 'set', 'U+0085'],
    ];
    for (const [change, field, codePoint] of bad) {
      await expect(manager.updateVolumeMetadata(target.id, change as never)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field, reason: 'control_character', codePoint } });
    }
    expect(() => assertCallerVolumeMetadata({ 'k\u0000': 'v' })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', details: { field: 'metadata', reason: 'control_character', key: 'k\u0000', codePoint: 'U+0000' } }));
    expect((await volumes.getVolume(target.id)).metadata).toEqual(target.metadata);
    // Values are held to their length alone (as Cinder), and keys may hold any other character.
    const fine = { 'a/b c:d-é\u{1F600}': 'tab\there\nnewline' };
    expect((await manager.updateVolumeMetadata(target.id, { set: fine })).metadata).toMatchObject(fine);
    // A key stored before the rule can still be unset.
    await volumes.setVolumeMetadata(target.id, { ...(await volumes.getVolume(target.id)).metadata, 'old\u0000key': 'x' });
    expect((await manager.updateVolumeMetadata(target.id, { unset: ['old\u0000key'] })).metadata).not.toHaveProperty('old\u0000key');
  });

  it("a restore gives the volume the backup's metadata whatever its lengths (the limits are the caller's, as Cinder's restore does not check them)", async () => {
    const { manager, volumes, target } = await metadataRig();
    const src = await volumes.createVolume({ size: 2 * MiB, metadata: { note: 'n'.repeat(300) } });
    const b = await manager.backup({ volumeId: src.id });
    await manager.restore({ backupId: b.id, volumeId: target.id });
    expect((await volumes.getVolume(target.id)).metadata).toEqual({ note: 'n'.repeat(300), 'cairn.restore-job': 'job-of-the-target' });
  });

  it('NOT_FOUND for an unknown volume, NOT_SUPPORTED without the capability', async () => {
    const { manager, volumes, target } = await metadataRig();
    await expectCode(manager.updateVolumeMetadata('00000000-0000-4000-8000-000000000000', { replace: {} }), 'NOT_FOUND');
    withoutCapability(volumes);
    await expectCode(manager.updateVolumeMetadata(target.id, { replace: {} }), 'NOT_SUPPORTED');
  });

  it('CONFLICT while a restore works on the volume; its metadata then is the backup\'s', async () => {
    const { manager, volumes, service, b, target } = await metadataRig();
    let entered!: () => void;
    const inRestore = new Promise<void>((resolve) => (entered = resolve));
    let go!: () => void;
    const proceed = new Promise<void>((resolve) => (go = resolve));
    const restore = service.restore.bind(service);
    service.restore = async (...args) => {
      entered();
      await proceed;
      return restore(...args);
    };
    const { job } = await manager.startRestore({ backupId: b.id, volumeId: target.id });
    await inRestore;
    await expect(manager.updateVolumeMetadata(target.id, { set: { late: 'yes' } })).rejects.toMatchObject({
      code: 'CONFLICT',
      details: { volumeId: target.id, volumeStatus: 'restoring-backup' },
    });
    go();
    await job.done;
    expect((await volumes.getVolume(target.id)).metadata).toEqual({ tier: 'gold', app: 'db', 'cairn.restore-job': 'job-of-the-target' });
  });
});
