import { describe, expect, it } from 'vitest';
import {
  CairnError,
  MemoryBackupService,
  MemoryCatalog,
  MemoryObjectStore,
  MemoryVolumeDriver,
  type AttachMode,
  type AttachTarget,
  type Attachment,
  type BackupRecord,
  type BlockDevice,
  type ByteRange,
  type CreateVolumeSpec,
  type CatalogPutOptions,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
} from '@cairn/core';
import {
  attachConflicts,
  backupRoundTrip,
  catalogConditionalWrites,
  catalogSections,
  changedExtents,
  dependentChainCases,
  objectListing,
  objectReadInto,
  objectReadWrite,
  runCase,
  snapshotCases,
  volumeIo,
  volumeLifecycle,
  type Case,
} from '../src/index.js';

// The suite must be able to fail: each deliberately broken reference driver is caught.

const byName = <C>(cases: Case<C>[], prefix: string): Case<C> => {
  const c = cases.find((x) => x.name.startsWith(prefix));
  if (!c) throw new Error(`no case named ${prefix}`);
  return c;
};

/** A memory driver whose devices are damaged by `mangle` after attach. */
class BrokenVolumeDriver extends MemoryVolumeDriver {
  constructor(private readonly mangle: (device: BlockDevice, target: AttachTarget) => void) {
    super();
  }
  override async attach(target: AttachTarget, mode: AttachMode): Promise<Attachment> {
    const a = await super.attach(target, mode);
    this.mangle(a.device, target);
    return a;
  }
}

const volumeCtx = (driver: MemoryVolumeDriver) => ({ setup: async () => ({ driver, volumeSize: 4 * 1024 * 1024 }) });

describe('the volume-driver suite catches a broken driver', () => {
  it('a flipped byte on read fails the round-trip case', async () => {
    const driver = new BrokenVolumeDriver((device) => {
      const read = device.read.bind(device);
      device.read = async (offset, length, into) => {
        const b = await read(offset, length, into);
        if (b.length > 5000) b[4999] ^= 0x01;
        return b;
      };
    });
    const c = byName(volumeIo.cases, 'write then read');
    await expect(runCase(c, volumeCtx(driver))).rejects.toThrow(/differ first at offset 4999/);
  });

  it('a dropped changed extent fails the changed-block case', async () => {
    const driver = new BrokenVolumeDriver((device) => {
      const extents = device.extents.bind(device);
      device.extents = async (query, range) => {
        const list = await extents(query, range);
        return query.kind === 'changed' ? list.slice(1) : list;
      };
    });
    const c = byName(changedExtents.cases, 'extents(changed since checkpoint) is exact');
    await expect(runCase(c, volumeCtx(driver))).rejects.toThrow(/is not reported/);
  });

  it('an over-reported changed extent fails the changed-block case', async () => {
    const driver = new BrokenVolumeDriver((device) => {
      const extents = device.extents.bind(device);
      device.extents = async (query, range) => {
        const list = await extents(query, range);
        return query.kind === 'changed' ? [...list, { offset: 293 * 4096, length: 4096 }].sort((a, b) => a.offset - b.offset) : list;
      };
    });
    const c = byName(changedExtents.cases, 'extents(changed since checkpoint) is exact');
    await expect(runCase(c, volumeCtx(driver))).rejects.toThrow(/reported but never written/);
  });

  it('a snapshot that shows later writes fails the isolation case', async () => {
    let live: BlockDevice | undefined;
    const driver = new BrokenVolumeDriver((device, target) => {
      if (target.kind === 'volume' && device.mode === 'rw') live = device;
      if (target.kind === 'snapshot') device.read = (offset, length, into) => live!.read(offset, length, into);
    });
    const c = byName(snapshotCases.cases, 'attach(snapshot) reads the data of its time');
    await expect(runCase(c, volumeCtx(driver))).rejects.toThrow(/snapshot content/);
  });

  it('a detach that fails the second time fails the idempotence case', async () => {
    const driver = new MemoryVolumeDriver();
    const seen = new Set<string>();
    const detach = driver.detach.bind(driver);
    driver.detach = async (id) => {
      if (seen.has(id)) throw Object.assign(new Error('already detached'), { code: 'NOT_FOUND' });
      seen.add(id);
      return detach(id);
    };
    const c = byName(volumeIo.cases, 'detach is idempotent');
    await expect(runCase(c, volumeCtx(driver))).rejects.toThrow(/already detached/);
  });

  it('a driver that lets a writer attach next to readers (only rw next to rw is BUSY) fails the conflict cases', async () => {
    const permissive = () => {
      const driver = new MemoryVolumeDriver();
      const inner = driver as unknown as { assertNoConflict(id: string, mode: AttachMode): void; attachmentsOf(id: string): Attachment[] };
      inner.assertNoConflict = (id, mode) => {
        if (mode === 'rw' && inner.attachmentsOf(id).some((a) => a.mode === 'rw')) throw new CairnError('BUSY', 'second writer');
      };
      return driver;
    };
    const { cases } = attachConflicts(new MemoryVolumeDriver().capabilities);
    for (const prefix of ['attach(rw) next to a read-only', 'attach(ro) next to a read-write', 'once the conflicting attachments', 'a refused attach changes nothing']) {
      await expect(runCase(byName(cases, prefix), volumeCtx(permissive())), prefix).rejects.toThrow(/should fail with BUSY but succeeded/);
    }
    await runCase(byName(cases, 'two read-only attachments'), volumeCtx(permissive()));
  });

  it('a driver that stores any name fails the name case', async () => {
    const lax = new (class extends MemoryVolumeDriver {
      override async createVolume(spec: CreateVolumeSpec) {
        return { ...(await super.createVolume({ ...spec, name: undefined })), name: spec.name ?? '' };
      }
    })();
    await expect(runCase(byName(volumeLifecycle.cases, 'createVolume with an empty, too long'), volumeCtx(lax))).rejects.toThrow(/should fail with INVALID_INPUT but succeeded/);
  });
});

describe('the object-store suite catches a broken store', () => {
  it('a put that ignores ifAbsent fails the ALREADY_EXISTS case', async () => {
    const store = new MemoryObjectStore();
    const put = store.put.bind(store);
    store.put = (key: string, data: Uint8Array, _o?: PutOptions) => put(key, data);
    const c = byName(objectReadWrite.cases, 'put(ifAbsent) of an existing key');
    await expect(runCase(c, { setup: async () => ({ store, prefix: 'p1' }) })).rejects.toThrow(/ALREADY_EXISTS/);
  });

  it('a list that drops one key fails the listing case', async () => {
    const store = new MemoryObjectStore();
    const list = store.list.bind(store);
    store.list = async function* (prefix: string): AsyncIterable<ObjectInfo> {
      let first = true;
      for await (const o of list(prefix)) {
        if (first) {
          first = false;
          continue;
        }
        yield o;
      }
    };
    const c = byName(objectListing.cases, 'list(prefix) returns every key');
    await expect(runCase(c, { setup: async () => ({ store, prefix: 'p2', listKeys: 50 }) })).rejects.toThrow(/count/);
  });

  it('a ranged get that is off by one fails the range case', async () => {
    const store = new MemoryObjectStore();
    const get = store.get.bind(store);
    store.get = (key: string, range?: ByteRange) => get(key, range && range.offset > 0 ? { offset: range.offset - 1, length: range.length } : range);
    const c = byName(objectReadWrite.cases, 'get(range)');
    await expect(runCase(c, { setup: async () => ({ store, prefix: 'p3' }) })).rejects.toThrow(/range 1\+65536/);
  });

  it('a getInto that writes past the range fails the getInto case', async () => {
    const store: ObjectStore = new MemoryObjectStore();
    store.getInto = async (key: string, range: ByteRange, into: Buffer) => {
      (await store.get(key, range)).copy(into);
      into[range.length] = 0; // one byte too many
    };
    const c = byName(objectReadInto.cases, 'getInto fills exactly');
    await expect(runCase(c, { setup: async () => ({ store, prefix: 'p4' }) })).rejects.toThrow(/untouched/);
  });
});

describe('the catalog suite catches a broken catalog', () => {
  it('a putBackup that ignores ifAbsent fails the ALREADY_EXISTS case', async () => {
    const catalog = new MemoryCatalog();
    const put = catalog.putBackup.bind(catalog);
    catalog.putBackup = (record: BackupRecord, _o?: CatalogPutOptions) => put(record);
    const c = byName(catalogConditionalWrites.cases, 'putBackup(ifAbsent) stores');
    await expect(runCase(c, { setup: async () => ({ catalog }) })).rejects.toThrow(/ALREADY_EXISTS/);
  });

  it('a putVolumeState that ignores ifAbsent fails the volume-state case', async () => {
    const catalog = new MemoryCatalog();
    const put = catalog.putVolumeState.bind(catalog);
    catalog.putVolumeState = (state, _o?: CatalogPutOptions) => put(state);
    const c = byName(catalogConditionalWrites.cases, 'putVolumeState(ifAbsent)');
    await expect(runCase(c, { setup: async () => ({ catalog }) })).rejects.toThrow(/ALREADY_EXISTS/);
  });
});

describe('the catalog suite catches a catalog whose sections do not exclude each other', () => {
  // A section that just runs fn: what a catalog shared by processes without any lock would do.
  const unguarded = (): MemoryCatalog => Object.assign(new MemoryCatalog(), { section: <T>(_id: string, fn: () => Promise<T>) => fn() });

  it('the read-modify-write case loses writes and fails', async () => {
    const c = byName(catalogSections.cases, 'sections of one backup never overlap');
    await expect(runCase(c, { setup: async () => ({ catalog: unguarded() }) })).rejects.toThrow(/writes lost/);
  });

  it('a section that never frees its backup after a failure fails the failure case', async () => {
    const catalog = new MemoryCatalog();
    const section = catalog.section.bind(catalog);
    let failedOnce = false;
    catalog.section = <T>(id: string, fn: () => Promise<T>): Promise<T> =>
      failedOnce ? new Promise<T>(() => {}) : section(id, fn).catch((err: unknown) => ((failedOnce = true), Promise.reject(err)));
    const c = byName(catalogSections.cases, 'a section resolves');
    await expect(runCase(c, { setup: async () => ({ catalog }) })).rejects.toThrow(/kept the backup/);
  });
});

describe('the backup-service suite catches a broken service', () => {
  const ctx = (service: MemoryBackupService) => ({
    setup: async () => ({ service, volumes: new MemoryVolumeDriver(), volumeSize: 8 * 1024 * 1024, corrupt: async (b: BackupRecord) => service.corrupt(b.id) }),
  });

  it('a restore that drops one block fails the round-trip case', async () => {
    const service = new MemoryBackupService();
    const restore = service.restore.bind(service);
    service.restore = async (backup, target, options) => {
      const write = target.write.bind(target);
      let n = 0;
      target.write = async (offset, data) => (n++ === 3 ? undefined : write(offset, data));
      return restore(backup, target, options);
    };
    const c = byName(backupRoundTrip.cases, 'a full backup restores byte-exact');
    await expect(runCase(c, ctx(service))).rejects.toThrow(/restored volume: bytes differ/);
  });

  it('a delete that ignores dependents fails the dependent-chain case', async () => {
    const service = new MemoryBackupService();
    const del = service.delete.bind(service);
    service.delete = (backup) => del(backup, { cascade: true });
    const c = byName(dependentChainCases.cases, 'delete of a backup others depend on');
    await expect(runCase(c, ctx(service))).rejects.toThrow(/should fail with CONFLICT/);
  });
});
