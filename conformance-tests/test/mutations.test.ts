import { describe, expect, it } from 'vitest';
import {
  CairnError,
  MemoryBackupService,
  MemoryCatalog,
  MemoryObjectStore,
  MemoryVolumeDriver,
  Repository,
  RepositoryCatalog,
  assertDisplayName,
  assertVolumeMetadata,
  type BackupRecord,
  type BackupService,
  type BlockDevice,
  type Catalog,
  type VolumeDriver,
} from '@cairn/core';
import {
  allocatedExtents,
  backupAssertStored,
  backupProgress,
  backupRoundTrip,
  backupServiceGroups,
  catalogConcurrency,
  catalogConditionalWrites,
  catalogGroups,
  catalogListings,
  catalogPaging,
  catalogSections,
  changedExtents,
  changedExtentsAcrossInstances,
  runCase,
  snapshotCases,
  volumeDriverGroups,
  volumeIo,
  volumeLifecycle,
  volumeMetadata,
  type BackupServiceContext,
  type Case,
  type CatalogContext,
  type Group,
  type VolumeDriverContext,
} from '../src/index.js';

// Hand mutation testing: each variant below breaks ONE documented contract clause of a reference
// implementation in a way that loses or corrupts data in production. Each passes every case the
// suite had before the case named (so the suite caught none of them then), and that case fails.

const byName = <C>(cases: Case<C>[], prefix: string): Case<C> => {
  const c = cases.find((x) => x.name.startsWith(prefix));
  if (!c) throw new Error(`no case named ${prefix}`);
  return c;
};

/** Every case of `groups` but `target` passes; `target` fails with `message`. */
async function caughtOnlyBy<C>(groups: Group<C>[], target: Case<C>, hooks: { setup: () => Promise<C> }, message: RegExp): Promise<void> {
  for (const c of groups.flatMap((g) => g.cases)) if (c !== target) await runCase(c, hooks);
  await expect(runCase(target, hooks)).rejects.toThrow(message);
}

/** Cases added with the mutations below, left out when showing the other cases pass. */
const added = new Set<unknown>();
const without = <C>(groups: Group<C>[], ...cases: Case<C>[]): Group<C>[] => groups.map((g) => ({ ...g, cases: g.cases.filter((c) => !cases.includes(c) && !added.has(c)) }));

const codeOf = (err: unknown) => (err as { code?: unknown }).code;

describe('volume-driver mutations', () => {
  const caps = new MemoryVolumeDriver().capabilities;
  const hooks = (mutate: (driver: MemoryVolumeDriver) => void) => ({
    setup: async (): Promise<VolumeDriverContext> => {
      const driver = new MemoryVolumeDriver();
      mutate(driver);
      return { driver, volumeSize: 4 * 1024 * 1024 };
    },
  });
  /** Damages every device `driver` attaches. */
  const onDevices = (driver: VolumeDriver, mangle: (device: BlockDevice, kind: 'volume' | 'snapshot') => void) => {
    const attach = driver.attach.bind(driver);
    driver.attach = async (target, mode) => {
      const a = await attach(target, mode);
      mangle(a.device, target.kind);
      return a;
    };
  };
  /** Attachment ids `driver` made, by target id: what a driver that "helpfully" detaches them uses. */
  const tracked = (driver: VolumeDriver, kind: 'volume' | 'snapshot', mode?: 'ro' | 'rw') => {
    const held = new Map<string, string[]>();
    const attach = driver.attach.bind(driver);
    driver.attach = async (target, m) => {
      const a = await attach(target, m);
      if (target.kind === kind && (!mode || m === mode)) held.set(target.id, [...(held.get(target.id) ?? []), a.id]);
      return a;
    };
    return held;
  };
  const groups = volumeDriverGroups(caps);
  const newCases = {
    checkpoint: byName(changedExtents.cases, 'extents(changed) answers for the checkpoint asked'),
    snapshotReadPastEnd: byName(snapshotCases.cases, 'a snapshot device refuses reads past its end'),
    extendAttached: byName(volumeIo.cases, 'extendVolume of an attached volume fails with BUSY'),
    deleteWithSnapshots: byName(snapshotCases.cases, 'deleteVolume of a volume with snapshots fails with BUSY'),
    deleteAttached: byName(volumeLifecycle.cases, 'deleteVolume of a volume attached read-write or read-only'),
    deleteAttachedSnapshot: byName(snapshotCases.cases, 'deleteSnapshot of an attached snapshot fails with BUSY'),
    staleDevice: byName(volumeIo.cases, 'a detached device refuses every call'),
    reusedBytes: byName(volumeLifecycle.cases, 'listVolumes lists created volumes'),
    unalignedEnd: byName(allocatedExtents.cases, 'a volume whose size is no multiple of the extent granularity'),
    otherVolumeCheckpoint: byName(changedExtents.cases, 'a checkpoint belongs to its volume'),
    deleteKeepsOthers: byName(changedExtents.cases, 'deleting a checkpoint keeps the changes of the others'),
    listCheckpointsUnknown: byName(changedExtents.cases, 'listCheckpoints of an unknown or deleted volume'),
    listSnapshotsUnknown: byName(snapshotCases.cases, 'listSnapshots of an unknown or deleted volume'),
    extendBadSize: byName(volumeLifecycle.cases, 'extendVolume to a size that is no multiple of 512'),
    concurrentRw: byName(groups.flatMap((g) => g.cases), 'concurrent attach(rw) calls of one volume'),
    concurrentRwRo: byName(groups.flatMap((g) => g.cases), 'concurrent attach(rw) and attach(ro) of one volume'),
    deleteKeepsData: byName(snapshotCases.cases, 'deleteSnapshot changes no data'),
    snapshotAllocated: byName(snapshotCases.cases, "a snapshot device's allocated extents describe the snapshot's bytes"),
    zeroFlagged: byName(allocatedExtents.cases, 'after writeZeroes and writes into the zeroed range'),
  };
  for (const c of Object.values(newCases)) added.add(c);

  it('changed extents answered for the oldest checkpoint of the volume, whichever was asked', async () => {
    const h = hooks((driver) => {
      const cbt = driver.changedBlockTracking;
      const volumeOf = new Map<string, string>();
      const create = cbt.createCheckpoint.bind(cbt);
      cbt.createCheckpoint = async (volumeId) => {
        const cp = await create(volumeId);
        volumeOf.set(cp.id, volumeId);
        return cp;
      };
      onDevices(driver, (device) => {
        const extents = device.extents.bind(device);
        device.extents = async (query, range) => {
          const volumeId = query.kind === 'changed' ? volumeOf.get(query.since) : undefined;
          const checkpoints = volumeId ? await cbt.listCheckpoints(volumeId) : [];
          const known = query.kind === 'changed' && checkpoints.some((c) => c.id === query.since);
          return extents(known ? { kind: 'changed', since: checkpoints[0]!.id } : query, range);
        };
      });
    });
    await caughtOnlyBy(without(groups), newCases.checkpoint, h, /changed since the newer checkpoint: byte \d+ reported but never written/);
  });

  it('a snapshot device that reads zeros past its end instead of failing', async () => {
    const h = hooks((driver) =>
      onDevices(driver, (device, kind) => {
        if (kind !== 'snapshot') return;
        const read = device.read.bind(device);
        device.read = async (offset, length, into) => {
          if (offset < 0 || offset + length <= device.size) return read(offset, length, into);
          const out = Buffer.alloc(length);
          if (offset < device.size) (await read(offset, device.size - offset)).copy(out);
          return out;
        };
      }),
    );
    await caughtOnlyBy(without(groups), newCases.snapshotReadPastEnd, h, /snapshot read past end should fail with INVALID_INPUT but succeeded/);
  });

  it('an extendVolume of an attached volume that answers with the new size and grows nothing', async () => {
    const h = hooks((driver) => {
      const extend = driver.extendVolume.bind(driver);
      driver.extendVolume = async (id, size) => {
        try {
          return await extend(id, size);
        } catch (err) {
          if (codeOf(err) !== 'BUSY') throw err;
          return { ...(await driver.getVolume(id)), size };
        }
      };
    });
    await caughtOnlyBy(without(groups), newCases.extendAttached, h, /extendVolume\(attached rw\) should fail with BUSY but succeeded/);
  });

  it('a deleteVolume that deletes the volume\'s snapshots with it', async () => {
    const h = hooks((driver) => {
      const del = driver.deleteVolume.bind(driver);
      driver.deleteVolume = async (id) => {
        for (const s of await driver.listSnapshots(id).catch(() => [])) await driver.deleteSnapshot(s.id);
        return del(id);
      };
    });
    await caughtOnlyBy(without(groups), newCases.deleteWithSnapshots, h, /deleteVolume\(with a snapshot\) should fail with BUSY but succeeded/);
  });

  it('a deleteVolume that detaches the read-only attachments (a backup reading it) and deletes', async () => {
    const h = hooks((driver) => {
      const readers = tracked(driver, 'volume', 'ro');
      const del = driver.deleteVolume.bind(driver);
      driver.deleteVolume = async (id) => {
        try {
          return await del(id);
        } catch (err) {
          if (codeOf(err) !== 'BUSY' || !readers.get(id)?.length) throw err;
          for (const a of readers.get(id)!) await driver.detach(a);
          return del(id);
        }
      };
    });
    await caughtOnlyBy(without(groups), newCases.deleteAttached, h, /deleteVolume\(attached ro\) should fail with BUSY but succeeded/);
  });

  it('a deleteSnapshot that detaches the snapshot\'s readers and deletes', async () => {
    const h = hooks((driver) => {
      const readers = tracked(driver, 'snapshot');
      const del = driver.deleteSnapshot.bind(driver);
      driver.deleteSnapshot = async (id) => {
        try {
          return await del(id);
        } catch (err) {
          if (codeOf(err) !== 'BUSY' || !readers.get(id)?.length) throw err;
          for (const a of readers.get(id)!) await driver.detach(a);
          return del(id);
        }
      };
    });
    await caughtOnlyBy(without(groups), newCases.deleteAttachedSnapshot, h, /deleteSnapshot\(attached\) should fail with BUSY but succeeded/);
  });
  it('a device that still writes after its detach, into whatever attachment now holds the volume', async () => {
    const h = hooks((driver) => {
      const current = new Map<string, BlockDevice>();
      const attach = driver.attach.bind(driver);
      driver.attach = async (target, mode) => {
        const a = await attach(target, mode);
        if (target.kind !== 'volume' || mode !== 'rw') return a;
        current.set(target.id, a.device);
        const write = a.device.write.bind(a.device);
        a.device.write = async (offset, data) => {
          try {
            return await write(offset, data);
          } catch (err) {
            const now = current.get(target.id);
            if (codeOf(err) !== 'INVALID_INPUT' || !now || now === a.device) throw err;
            return now.write(offset, data); // the stale handle's write lands
          }
        };
        return a;
      };
    });
    await caughtOnlyBy(without(groups), newCases.staleDevice, h, /write after detach should fail with INVALID_INPUT but succeeded/);
  });

  it('a createVolume that reuses the storage of a deleted volume without zeroing it', async () => {
    const h = hooks((driver) => {
      let freed: Buffer | undefined;
      const del = driver.deleteVolume.bind(driver);
      driver.deleteVolume = async (id) => {
        const v = await driver.getVolume(id);
        const r = await driver.attach({ kind: 'volume', id }, 'ro').catch(() => undefined);
        const bytes = r ? await r.device.read(0, v.size) : undefined;
        if (r) await driver.detach(r.id);
        await del(id);
        freed = bytes;
      };
      const create = driver.createVolume.bind(driver);
      driver.createVolume = async (spec) => {
        const v = await create(spec);
        if (freed?.length === v.size) {
          const w = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
          await w.device.write(0, freed);
          await driver.detach(w.id);
          freed = undefined;
        }
        return v;
      };
    });
    await caughtOnlyBy(without(groups), newCases.reusedBytes, h, /a volume created after a delete: bytes differ/);
  });

  it('extents that stop at the last whole granule, so the partial one at the end of an unaligned volume is never reported', async () => {
    const h = hooks((driver) =>
      onDevices(driver, (device) => {
        const extents = device.extents.bind(device);
        device.extents = async (query, range) => {
          const whole = Math.floor(device.size / device.extentGranularity) * device.extentGranularity;
          return (await extents(query, range)).flatMap((e) => (e.offset + e.length <= whole ? [e] : e.offset < whole ? [{ ...e, length: whole - e.offset }] : []));
        };
      }),
    );
    await caughtOnlyBy(without(groups), newCases.unalignedEnd, h, /allocated extents miss written byte \d+ of \d+/);
  });

  it("checkpoints kept in one table for all volumes: a device asked since another volume's checkpoint answers that nothing changed", async () => {
    const h = hooks((driver) => {
      const cbt = driver.changedBlockTracking;
      const volumeOf = new Map<string, string>();
      const create = cbt.createCheckpoint.bind(cbt);
      cbt.createCheckpoint = async (volumeId) => {
        const cp = await create(volumeId);
        volumeOf.set(cp.id, volumeId);
        return cp;
      };
      const snapshotOf = new Map<string, string>();
      const snap = driver.createSnapshot.bind(driver);
      driver.createSnapshot = async (volumeId, name) => {
        const s = await snap(volumeId, name);
        snapshotOf.set(s.id, volumeId);
        return s;
      };
      const attach = driver.attach.bind(driver);
      driver.attach = async (target, mode) => {
        const a = await attach(target, mode);
        const extents = a.device.extents.bind(a.device);
        const volumeId = target.kind === 'volume' ? target.id : snapshotOf.get(target.id);
        a.device.extents = async (query, range) => {
          const since = query.kind === 'changed' ? query.since : undefined;
          const owner = since === undefined ? undefined : volumeOf.get(since);
          if (owner && owner !== volumeId && (await cbt.listCheckpoints(owner)).some((c) => c.id === since)) return [];
          return extents(query, range);
        };
        return a;
      };
    });
    await caughtOnlyBy(without(groups), newCases.otherVolumeCheckpoint, h, /extents of volume A since volume B's checkpoint should fail with NOT_FOUND but succeeded/);
  });

  it("a deleteCheckpoint that resets the volume's tracking, so the other checkpoints lose the writes made before it", async () => {
    // The reference keeps a page set per checkpoint; this one clears them all at any delete, as a
    // driver with one shared dirty map cleared by "stop tracking" would.
    const h = hooks((driver) => {
      const cbt = driver.changedBlockTracking;
      const del = cbt.deleteCheckpoint.bind(cbt);
      const state = (driver as unknown as { volumes: Map<string, { dirty: Map<string, { pages: Set<number> }> }> }).volumes;
      cbt.deleteCheckpoint = async (volumeId, checkpointId) => {
        await del(volumeId, checkpointId);
        for (const d of state.get(volumeId)?.dirty.values() ?? []) d.pages.clear();
      };
    });
    await caughtOnlyBy(without(groups), newCases.deleteKeepsOthers, h, /changed since the older checkpoint, after the middle one was deleted: written byte \d+ is missing/);
  });

  it('a listCheckpoints that answers an empty list for an unknown volume', async () => {
    const h = hooks((driver) => {
      const cbt = driver.changedBlockTracking;
      const list = cbt.listCheckpoints.bind(cbt);
      cbt.listCheckpoints = (volumeId) => list(volumeId).catch((err: unknown) => (codeOf(err) === 'NOT_FOUND' ? [] : Promise.reject(err)));
    });
    await caughtOnlyBy(without(groups), newCases.listCheckpointsUnknown, h, /listCheckpoints\(unknown volume\) should fail with NOT_FOUND but succeeded/);
  });

  it('a listSnapshots that filters its snapshots by volume id without checking the volume exists', async () => {
    const h = hooks((driver) => {
      const list = driver.listSnapshots.bind(driver);
      driver.listSnapshots = (volumeId) => list(volumeId).catch((err: unknown) => (codeOf(err) === 'NOT_FOUND' ? [] : Promise.reject(err)));
    });
    await caughtOnlyBy(without(groups), newCases.listSnapshotsUnknown, h, /listSnapshots\(unknown volume\) should fail with NOT_FOUND but succeeded/);
  });

  it('an extendVolume that rounds a size that is no multiple of 512 up to the next sector instead of refusing it', async () => {
    const h = hooks((driver) => {
      const extend = driver.extendVolume.bind(driver);
      driver.extendVolume = (id, size) => extend(id, typeof size === 'number' && Number.isFinite(size) ? Math.ceil(size / 512) * 512 : size);
    });
    await caughtOnlyBy(without(groups), newCases.extendBadSize, h, /extendVolume\(8388708\) should fail with INVALID_INPUT but succeeded/);
  });

  it('a driver without setVolumeMetadata whose createVolume answers the name and metadata asked but keeps neither', async () => {
    const target = byName(volumeLifecycle.cases, 'createVolume returns an available volume of the requested size, name and metadata');
    const noMetadataCaps = { ...caps, volumeMetadata: false };
    const h = hooks((driver) => {
      Object.assign(driver, { capabilities: noMetadataCaps, setVolumeMetadata: undefined });
      const create = driver.createVolume.bind(driver);
      driver.createVolume = async (spec) => {
        if (spec.name !== undefined) assertDisplayName(spec.name, 'name', driver.name);
        if (spec.metadata !== undefined) assertVolumeMetadata(spec.metadata, 'metadata', driver.name);
        const v = await create({ size: spec.size });
        return { ...v, name: spec.name ?? '', metadata: { ...(spec.metadata ?? {}) } };
      };
    });
    await caughtOnlyBy(without(volumeDriverGroups(noMetadataCaps), target), target, h, /getVolume of the new volume/);
  });

  it('a setVolumeMetadata that takes a Map for metadata and so replaces the volume\'s metadata with none', async () => {
    const target = byName(volumeMetadata.cases, 'setVolumeMetadata with metadata that does not map strings to strings');
    const h = hooks((driver) => {
      const set = driver.setVolumeMetadata!.bind(driver);
      driver.setVolumeMetadata = (id, metadata) => set(id, metadata instanceof Map ? { ...metadata } : metadata);
    });
    await caughtOnlyBy(without(groups, target), target, h, /setVolumeMetadata\(a Map\) should fail with INVALID_INPUT but succeeded/);
  });

  it('an attach that checks for conflicts, awaits (opening an image), then registers: concurrent attaches all win', async () => {
    const h = hooks((driver) => {
      const inner = driver as unknown as { assertNoConflict(id: string, mode: string): void };
      const check = inner.assertNoConflict.bind(driver);
      const attach = driver.attach.bind(driver);
      driver.attach = async (target, mode) => {
        if (target?.kind !== 'volume') return attach(target, mode);
        check(target.id, mode); // a sequential conflict is still refused
        await new Promise((r) => setImmediate(r));
        inner.assertNoConflict = () => {};
        try {
          return await attach(target, mode);
        } finally {
          inner.assertNoConflict = check;
        }
      };
    });
    await caughtOnlyBy(without(groups), newCases.concurrentRw, h, /concurrent attach\(rw, rw, rw, rw\): 4 attaches succeeded/);
    await expect(runCase(newCases.concurrentRwRo, h)).rejects.toThrow(/concurrent attach\(rw, ro\): 2 attaches succeeded/);
  });

  it('a deleteSnapshot that merges the wrong way: the volume goes back to the snapshot', async () => {
    const h = hooks((driver) => {
      const del = driver.deleteSnapshot.bind(driver);
      driver.deleteSnapshot = async (id) => {
        const s = await driver.attach({ kind: 'snapshot', id }, 'ro').catch(() => undefined);
        if (s) {
          const bytes = await s.device.read(0, s.device.size);
          await driver.detach(s.id);
          const volumeId = (await driver.listVolumes()).find((v) => v.size === bytes.length && v.status === 'available')?.id;
          const w = volumeId ? await driver.attach({ kind: 'volume', id: volumeId }, 'rw').catch(() => undefined) : undefined;
          if (w) {
            await w.device.write(0, bytes);
            await driver.detach(w.id);
          }
        }
        return del(id);
      };
    });
    await caughtOnlyBy(without(groups), newCases.deleteKeepsData, h, /the volume after the older snapshot was deleted: bytes differ/);
  });

  it('a deleteSnapshot that drops data the volume still shares with it: the parts not rewritten since read zeros', async () => {
    const h = hooks((driver) => {
      const del = driver.deleteSnapshot.bind(driver);
      driver.deleteSnapshot = async (id) => {
        const volumeId = (await driver.listVolumes()).find((v) => v.status === 'available')?.id;
        const s = await driver.attach({ kind: 'snapshot', id }, 'ro').catch(() => undefined);
        const w = s && volumeId ? await driver.attach({ kind: 'volume', id: volumeId }, 'rw').catch(() => undefined) : undefined;
        if (s && w && w.device.size === s.device.size) {
          for (let at = 0; at < s.device.size; at += 4096) {
            if ((await s.device.read(at, 4096)).equals(await w.device.read(at, 4096))) await w.device.writeZeroes(at, 4096);
          }
        }
        if (w) await driver.detach(w.id);
        if (s) await driver.detach(s.id);
        return del(id);
      };
    });
    await caughtOnlyBy(without(groups), newCases.deleteKeepsData, h, /the volume after the older snapshot was deleted: bytes differ first at offset 0/);
  });

  it("a snapshot device whose allocated extents are the live volume's", async () => {
    const h = hooks((driver) => {
      const writers = new Map<string, BlockDevice>();
      const snapshotOf = new Map<string, string>();
      const create = driver.createSnapshot.bind(driver);
      driver.createSnapshot = async (volumeId, name) => {
        const s = await create(volumeId, name);
        snapshotOf.set(s.id, volumeId);
        return s;
      };
      const attach = driver.attach.bind(driver);
      driver.attach = async (target, mode) => {
        const a = await attach(target, mode);
        if (target.kind === 'volume' && mode === 'rw') writers.set(target.id, a.device);
        if (target.kind === 'snapshot') {
          const extents = a.device.extents.bind(a.device);
          a.device.extents = async (query, range) => {
            const live = writers.get(snapshotOf.get(target.id)!);
            return query.kind === 'allocated' && live ? live.extents(query, range).catch(() => extents(query, range)) : extents(query, range);
          };
        }
        return a;
      };
    });
    await caughtOnlyBy(without(groups), newCases.snapshotAllocated, h, /allocated extents of the snapshot: byte 0 holds data but lies in no allocated extent/);
  });

  it('allocated extents that keep zero: true on a range once zeroed, after it is written again', async () => {
    const h = hooks((driver) =>
      onDevices(driver, (device) => {
        const zeroed: [number, number][] = [];
        const writeZeroes = device.writeZeroes.bind(device);
        device.writeZeroes = async (offset, length) => {
          await writeZeroes(offset, length);
          zeroed.push([offset, offset + length]);
        };
        const extents = device.extents.bind(device);
        device.extents = async (query, range) => {
          const list = await extents(query, range);
          if (query.kind !== 'allocated') return list;
          return list.map((e) => (zeroed.some(([from, to]) => from < e.offset + e.length && e.offset < to) ? { ...e, zero: true } : e));
        };
      }),
    );
    await caughtOnlyBy(without(groups), newCases.zeroFlagged, h, /allocated extents after writeZeroes then writes: byte \d+ holds data but lies in an extent flagged zero/);
  });

  it('a driver whose errors are plain Errors carrying a code, or CairnErrors not tagged with its name', async () => {
    const target = byName(volumeIo.cases, 'attach rw marks the volume in-use, a second rw attach fails with BUSY');
    const rethrowing = (wrap: (err: CairnError) => unknown) =>
      hooks((driver) => {
        const attach = driver.attach.bind(driver);
        driver.attach = (target, mode) => attach(target, mode).catch((err: unknown) => Promise.reject(err instanceof CairnError ? wrap(err) : err));
      });
    await runCase(target, rethrowing((err) => err));
    const plain = (err: CairnError) => Object.assign(new Error(err.message), { code: err.code, details: err.details, driver: err.driver });
    await expect(runCase(target, rethrowing(plain))).rejects.toThrow(/second rw attach failed with code BUSY but not with a CairnError/);
    const untagged = (err: CairnError) => new CairnError(err.code, err.message, { details: err.details });
    await expect(runCase(target, rethrowing(untagged))).rejects.toThrow(/second rw attach: the BUSY error should be tagged with driver "memory"/);
  });

  it('changed-block tracking kept per instance: an instance reports only the changes written through its own devices', async () => {
    const target = byName(changedExtentsAcrossInstances.cases, 'writes made through the second instance');
    /** A view of `shared` as another instance; its changed extents keep only ranges written through it. */
    const instance = (shared: MemoryVolumeDriver): VolumeDriver => {
      const view = Object.create(shared) as MemoryVolumeDriver;
      const written: [number, number][] = [];
      const overlaps = (e: { offset: number; length: number }) => written.some(([from, to]) => from < e.offset + e.length && e.offset < to);
      view.attach = async (target, mode) => {
        const a = await shared.attach(target, mode);
        if (target.kind !== 'volume') return a;
        const { write, writeZeroes, extents } = { write: a.device.write.bind(a.device), writeZeroes: a.device.writeZeroes.bind(a.device), extents: a.device.extents.bind(a.device) };
        a.device.write = async (offset, data) => {
          await write(offset, data);
          written.push([offset, offset + data.length]);
        };
        a.device.writeZeroes = async (offset, length) => {
          await writeZeroes(offset, length);
          written.push([offset, offset + length]);
        };
        a.device.extents = async (query, range) => (query.kind === 'changed' ? (await extents(query, range)).filter(overlaps) : extents(query, range));
        return a;
      };
      return view;
    };
    const peerGroups = volumeDriverGroups(caps, { sharesReadOnly: true });
    const h = {
      setup: async (): Promise<VolumeDriverContext> => {
        const shared = new MemoryVolumeDriver();
        return { driver: instance(shared), peer: instance(shared), volumeSize: 4 * 1024 * 1024 };
      },
    };
    await caughtOnlyBy(without(peerGroups), target, h, /asked through the instance that took the checkpoint: written byte 0 is not reported/);
    const honest = { setup: async (): Promise<VolumeDriverContext> => { const shared = new MemoryVolumeDriver(); return { driver: shared, peer: Object.create(shared) as VolumeDriver, volumeSize: 4 * 1024 * 1024 }; } };
    await runCase(target, honest);
  });
});

describe('catalog mutations', () => {
  const hooks = (mutate: (catalog: MemoryCatalog) => void) => ({
    setup: async (): Promise<CatalogContext> => {
      const catalog = new MemoryCatalog();
      mutate(catalog);
      return { catalog };
    },
  });
  // Paging (added after these mutations) checks listBackups' order too: left out with the listings.
  const others = without(catalogGroups({ atomicIfAbsent: true }).filter((g) => g !== catalogListings && g !== catalogPaging));
  const listing = (prefix: string) => byName(catalogListings.cases, prefix);
  const filterCase = listing('listBackups lists exactly the records matching each filter');
  const latestCase = listing('latestBackup is what listBackups');
  const deleteCase = listing('a deleted backup is gone');
  const statesCase = listing('listVolumeStates lists every state put');

  const mutations: [string, (c: Catalog) => void, Case<CatalogContext>, RegExp][] = [
    [
      'listBackups({volumeId}) by key prefix: vol-a also lists vol-a2',
      (c) => {
        const list = c.listBackups.bind(c);
        c.listBackups = async (f = {}) => (await list({ ...f, volumeId: undefined })).filter((r) => !f.volumeId || r.volumeId.startsWith(f.volumeId));
      },
      filterCase,
      /listBackups\(\{volumeId: vol-a\}\)/,
    ],
    [
      'listBackups ordered by id, not creation time',
      (c) => {
        const list = c.listBackups.bind(c);
        c.listBackups = async (f) => (await list(f)).sort((a, b) => (a.id < b.id ? -1 : 1));
      },
      filterCase,
      /listBackups\(\)/,
    ],
    [
      'listBackups ignores the status filter',
      (c) => {
        const list = c.listBackups.bind(c);
        c.listBackups = async (f = {}) => list({ ...f, status: undefined });
      },
      filterCase,
      /listBackups\(\{status: available\}\)/,
    ],
    [
      'listBackups ignores the parentId and service filters',
      (c) => {
        const list = c.listBackups.bind(c);
        c.listBackups = async (f = {}) => list({ ...f, parentId: undefined, service: undefined });
      },
      filterCase,
      /listBackups\(\{parentId\}\)/,
    ],
    [
      'latestBackup answers the oldest record',
      (c) => {
        const list = c.listBackups.bind(c);
        c.latestBackup = async (f) => (await list(f))[0];
      },
      latestCase,
      /latestBackup\(vol-a\)/,
    ],
    [
      'latestBackup ignores the status filter',
      (c) => {
        const latest = c.latestBackup.bind(c);
        c.latestBackup = async (f) => latest({ ...f, status: undefined });
      },
      latestCase,
      /latestBackup\(vol-a, available\)/,
    ],
    [
      'deleteBackup leaves the record in listings (a stale index entry)',
      (c) => {
        const list = c.listBackups.bind(c);
        const get = c.getBackup.bind(c);
        const del = c.deleteBackup.bind(c);
        const stale = new Map<string, BackupRecord>();
        c.deleteBackup = async (id) => {
          await get(id).then((r) => stale.set(id, r), () => undefined);
          return del(id);
        };
        c.listBackups = async (f = {}) => [...(await list(f)), ...[...stale.values()].filter((r) => !f.volumeId || r.volumeId === f.volumeId)];
      },
      deleteCase,
      /listBackups\(vol-a\) after delete/,
    ],
    [
      'clearVolumeState leaves the state in listVolumeStates',
      (c) => {
        const list = c.listVolumeStates.bind(c);
        const get = c.getVolumeState.bind(c);
        const clear = c.clearVolumeState.bind(c);
        const stale: Awaited<ReturnType<Catalog['getVolumeState']>>[] = [];
        c.clearVolumeState = async (id) => {
          stale.push(await get(id));
          return clear(id);
        };
        c.listVolumeStates = async () => [...(await list()), ...stale.filter((s) => s !== undefined)];
      },
      statesCase,
      /listVolumeStates\(\)/,
    ],
  ];
  for (const [what, mutate, target, message] of mutations) {
    it(what, async () => {
      await caughtOnlyBy(others, target, hooks(mutate), message);
    });
  }

  it('a putBackup that takes a day past its month\'s end (2026-02-30) for a day of the next month, as Date.parse does', async () => {
    const target = listing('putBackup stores createdAt and updatedAt canonical');
    const lenient = (t: string): string => {
      const ms = /^\d{4}-\d{2}-\d{2}T.*(?:Z|[+-]\d{2}:\d{2})$/.test(t) ? Date.parse(t) : NaN;
      return Number.isFinite(ms) ? new Date(ms).toISOString() : t;
    };
    const mutate = (c: Catalog) => {
      const put = c.putBackup.bind(c);
      c.putBackup = (r, options) => put({ ...r, createdAt: lenient(r.createdAt), updatedAt: lenient(r.updatedAt) }, options);
    };
    await caughtOnlyBy(without(catalogGroups({ atomicIfAbsent: true }), target), target, hooks(mutate), /putBackup with createdAt 2026-02-30T01:00:00\.000Z should fail with INVALID_INPUT but succeeded/);
  });

  it('a section that ignores its signal while it waits, and runs fn once the holder ends', async () => {
    const target = byName(catalogSections.cases, 'a section waiting for another rejects with CANCELLED');
    const mutate = (c: Catalog) => {
      const section = c.section.bind(c);
      c.section = (id, fn) => section(id, fn);
    };
    await caughtOnlyBy(without(catalogGroups({ atomicIfAbsent: true }), target), target, hooks(mutate), /a waiting section whose signal aborted/);
  });

  it('a catalog over a shared store whose only-if-absent writes check only what this instance wrote', async () => {
    // The repository's catalog over one store, opened twice as two processes would. (Intents were
    // already checked across instances by the intent concurrency case.)
    const perInstance = (c: Catalog) => {
      const seen = new Set<string>();
      const guard = async (key: string, write: () => Promise<void>, ifAbsent?: boolean) => {
        if (ifAbsent && seen.has(key)) throw new CairnError('ALREADY_EXISTS', `${key} exists`);
        seen.add(key);
        await write();
      };
      const putBackup = c.putBackup.bind(c);
      const putVolumeState = c.putVolumeState.bind(c);
      const clear = c.clearVolumeState.bind(c);
      c.putBackup = (r, o) => guard(`backup/${r.id}`, () => putBackup(r), o?.ifAbsent);
      c.putVolumeState = (st, o) => guard(`state/${st.volumeId}`, () => putVolumeState(st), o?.ifAbsent);
      c.clearVolumeState = async (id) => void (seen.delete(`state/${id}`), await clear(id));
    };
    const hooksOf = {
      setup: async (): Promise<CatalogContext> => {
        const store = new MemoryObjectStore();
        await Repository.init(store, { kdf: { N: 1024, r: 8, p: 1 } });
        const open = async () => {
          const c = new RepositoryCatalog(await Repository.open(store));
          perInstance(c);
          return c;
        };
        return { catalog: await open(), sibling: await open() };
      },
    };
    const target = byName(catalogConditionalWrites.cases, 'only-if-absent writes see what a sibling instance wrote');
    const alsoChanged = [byName(catalogConcurrency.cases, 'of concurrent putBackup(ifAbsent)'), byName(catalogConcurrency.cases, 'of concurrent putVolumeState(ifAbsent)')];
    await caughtOnlyBy(without(catalogGroups({ atomicIfAbsent: true }), target, ...alsoChanged), target, hooksOf, /putBackup\(ifAbsent\) in the other instance should fail with ALREADY_EXISTS but succeeded/);
    for (const c of alsoChanged) await expect(runCase(c, hooksOf), c.name).rejects.toThrow(/winners: /);
  });
});

describe('backup-service mutations', () => {
  const caps = new MemoryBackupService().describe().capabilities;
  const hooks = (mutate: (service: MemoryBackupService) => void) => ({
    setup: async (): Promise<BackupServiceContext> => {
      const service = new MemoryBackupService();
      mutate(service);
      return { service, volumes: new MemoryVolumeDriver(), volumeSize: 8 * 1024 * 1024, corrupt: async (b: BackupRecord) => service.corrupt(b.id) };
    },
  });
  const others = without(backupServiceGroups(caps).filter((g) => g !== backupProgress));
  const progressCase = byName(backupProgress.cases, 'backup, restore and verify report progress');
  const cancelCase = byName(backupRoundTrip.cases, 'a backup cancelled while it copies');

  it('a backup that checks its signal on entry only, and so commits a backup cancelled while it copied', async () => {
    const mutate = (s: BackupService) => {
      const backup = s.backup.bind(s);
      s.backup = async (job, source) => {
        if (job.signal.aborted) throw new CairnError('CANCELLED', 'cancelled');
        return backup({ ...job, signal: new AbortController().signal }, source);
      };
    };
    await caughtOnlyBy(without(backupServiceGroups(caps), cancelCase), cancelCase, hooks(mutate), /cancelled while bytes were still to copy resolved/);
  });

  const storedCase = byName(backupAssertStored.cases, 'assertStored resolves for a stored backup');
  const stored: [string, (s: MemoryBackupService) => void, RegExp][] = [
    [
      'an assertStored that answers "stored" whatever the id, so an import whose data went meanwhile keeps a record of nothing',
      (s) => {
        s.assertStored = async () => {};
      },
      /assertStored\(a backup never stored\) should fail with NOT_FOUND but succeeded/,
    ],
    [
      'an assertStored that fails UNAVAILABLE for data that is gone, which the import flow does not take for gone',
      (s) => {
        const assertStored = s.assertStored.bind(s);
        s.assertStored = (b) =>
          assertStored(b).catch((err: unknown) => {
            throw codeOf(err) === 'NOT_FOUND' ? new CairnError('UNAVAILABLE', 'cannot tell', { driver: s.name }) : err;
          });
      },
      /assertStored\(a backup never stored\) should fail with NOT_FOUND, got UNAVAILABLE/,
    ],
  ];
  for (const [what, mutate, message] of stored) {
    it(what, async () => {
      await caughtOnlyBy(without(backupServiceGroups(caps), storedCase), storedCase, hooks(mutate), message);
    });
  }

  const progress: [string, (s: BackupService) => void, RegExp][] = [
    [
      'backup progress that passes its total',
      (s) => {
        const backup = s.backup.bind(s);
        s.backup = (job, source) => backup({ ...job, progress: (done, total) => job.progress(done + 65536, total) }, source);
      },
      /backup: done \d+ passed the total/,
    ],
    [
      'backup progress that goes back',
      (s) => {
        const backup = s.backup.bind(s);
        let n = 0;
        s.backup = (job, source) => backup({ ...job, progress: (done, total) => job.progress(n++ % 2 ? 0 : done, total) }, source);
      },
      /backup: done went back/,
    ],
    [
      'restore progress that passes its total',
      (s) => {
        const restore = s.restore.bind(s);
        s.restore = (b, t, o) => restore(b, t, { ...o, progress: o?.progress && ((done, total) => o.progress!(done * 2, total)) });
      },
      /restore: done \d+ passed the total/,
    ],
    [
      'verify progress that passes its total',
      (s) => {
        const verify = s.verify.bind(s);
        s.verify = (b, o) => verify(b, { ...o, progress: o?.progress && ((done, total) => o.progress!(done + 1, total)) });
      },
      /verify: done \d+ passed the total/,
    ],
  ];
  for (const [what, mutate, message] of progress) {
    it(what, async () => {
      // The group's other case (odd sizes, an unchanged incremental) runs the same checks: left out here.
      await caughtOnlyBy([...others, { ...backupProgress, cases: [progressCase] }], progressCase, hooks(mutate), message);
    });
  }
});
