import { rm } from 'node:fs/promises';
import {
  CairnError,
  assertDisplayName,
  assertVolumeMetadata,
  assertVolumeSize,
  newId,
  nowIso,
  ordinal,
  toCairnError,
  toDamagedVolume,
  type AttachMode,
  type AttachTarget,
  type Attachment,
  type CreateVolumeSpec,
  type DamagedSidecar,
  type Snapshot,
  type Volume,
  type VolumeDriver,
  type VolumeDriverCapabilities,
} from '@cairn/core';
import { AttachmentTable } from './attachment-table.js';
import { copiedCheckpoints } from './checkpoint-reconcile.js';
import type { DaemonSession } from './daemon-session.js';
import { destroyView, prepareView, startView, type FleecingView } from './fleecing-view.js';
import { qcow2ImageFacts } from './image-header.js';
import { holdImage } from './image-hold.js';
import { OtherInstances } from './other-instances.js';
import { parseQcow2VolumeOptions } from './options.js';
import { Qcow2Checkpoints } from './qcow2-checkpoints.js';
import { QemuImg } from './qemu-img.js';
import { RecordStore } from './record-store.js';
import { toSnapshot, toVolume, type SnapshotRecord, type VolumeRecord } from './records.js';
import { Runtime } from './runtime.js';
import { resolveRuntimeDir } from './runtime-dir.js';
import { assertWithinQcow2Limit, imageMaxSize, MAX_VOLUME_SIZE } from './size-limit.js';
import { growImage, imageSize } from './volume-extend.js';
import { checkVolumeStamp, imageStampNow, settledImageStamp } from './volume-stamp.js';

const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
/**
 * `close()` gives the daemon this long to quit (close its images, write their bitmaps) before
 * SIGTERM, then SIGKILL: six times the 5 s the quit had before, for slow storage, while a daemon
 * that does not answer at all still keeps `close()` under 40 s (with SIGTERM's 3 s and SIGKILL's 5 s).
 */
const DEFAULT_STOP_TIMEOUT_MS = 30_000;
/**
 * qemu-img's metadata work (create, check, info) reads the image's tables, about 1/8192 of its
 * allocated data (`qemu-img check`: 10–30 ms for 4 GiB allocated, README): two minutes cover an
 * image with 8 TiB allocated read at 10 MB/s, and bound a call on hung storage.
 */
const DEFAULT_QEMU_IMG_TIMEOUT_MS = 120_000;
/**
 * A snapshot copy may go this long without progress: longer than an NFS server's restart or
 * failover usually takes (a hard mount retries meanwhile), so a copy outlives a storage blip but
 * not a dead server.
 */
const DEFAULT_QEMU_IMG_STALL_MS = 120_000;

export interface Qcow2VolumeDriverOptions {
  /** Directory holding images, sidecars and temporary overlays; created when missing. Required. */
  directory: string;
  /**
   * Parent of the daemon's temp dir holding the QMP and NBD unix sockets (paths must stay under
   * 108 bytes: one too deep is `INVALID_INPUT` when the driver is built). Default `os.tmpdir()`,
   * or `/tmp` when that is too deep (resolveRuntimeDir).
   */
  runtimeDir?: string;
  /** The qemu-img program. Default `qemu-img` from PATH. */
  qemuImg?: string;
  /** The qemu-storage-daemon program. Default `qemu-storage-daemon` from PATH. */
  qemuStorageDaemon?: string;
  /**
   * How long to wait for the daemon to answer one QMP command, in ms; device I/O (NBD reads,
   * writes, flushes) gets ten times as long. A daemon that does not answer in time is treated as
   * stalled (see README). Default 30 000.
   */
  commandTimeoutMs?: number;
  /**
   * How long `close()` gives the daemon to quit cleanly (close its images, write their persistent
   * bitmaps) before SIGTERM, then SIGKILL (at most 3 and 5 s more), in ms; not tied to
   * `commandTimeoutMs`. A daemon killed before it closed an open image leaves its writes and
   * metadata caches unflushed and its bitmaps `in-use` (see README). Default 30 000, at most 2^31 - 1.
   */
  stopTimeoutMs?: number;
  /**
   * How long one `qemu-img` metadata run (create, check, info) may take, in ms; then it is killed
   * and the call fails with `UNAVAILABLE` (see README, "A hung qemu-img"). Default 120 000.
   */
  qemuImgTimeoutMs?: number;
  /**
   * How long a `qemu-img convert` (snapshot copy) may go without progress, in ms; then it is
   * killed and the call fails with `UNAVAILABLE`. Copies have no deadline. Default 120 000.
   */
  qemuImgStallMs?: number;
}

/** `volume` with what its image lacks (qcow2ImageFacts): no changed-block tracking for a qcow2 version 2 image. */
function withImageCapabilities(volume: Volume, facts: { holdsBitmaps?: boolean }): Volume {
  return facts.holdsBitmaps === false ? { ...volume, capabilities: { changedBlockTracking: false } } : volume;
}

/**
 * qcow2 volumes managed with `qemu-img` and served by ONE qemu-storage-daemon per driver
 * instance (started on first need, restarted after a crash on the next need, stopped by
 * `close()`): QMP for control, NBD for data. Snapshots of a volume whose image is open in the
 * daemon are fleecing views; of a closed one, sparse copies with their bitmaps. Checkpoints are
 * persistent dirty bitmaps. See README.md for the mapping onto qemu primitives.
 */
export class Qcow2VolumeDriver implements VolumeDriver {
  readonly name = 'qcow2';
  readonly capabilities: VolumeDriverCapabilities = {
    snapshots: true,
    changedBlockTracking: true,
    quiesce: false,
    flowOverride: false,
    attach: true,
    multiAttachReadOnly: true,
    volumeMetadata: true,
  };
  readonly changedBlockTracking: Qcow2Checkpoints;
  private readonly store: RecordStore;
  private readonly runtime: Runtime;
  private readonly qemuImg: QemuImg;
  private readonly table: AttachmentTable;
  private readonly others: OtherInstances;
  private readonly views = new Map<string, FleecingView>();

  /** `INVALID_INPUT` naming the option for a wrong or unknown option (parseQcow2VolumeOptions), as the plugin factory. */
  constructor(given: Qcow2VolumeDriverOptions) {
    const options = parseQcow2VolumeOptions(given);
    const timeout = options.commandTimeoutMs;
    // The daemon's sockets (qmp.sock, nbd.sock: same length) go in a directory under it: a
    // configured one too deep is refused here, not at the first attach; unset, a deep $TMPDIR gives way to /tmp.
    const runtimeDir = resolveRuntimeDir(options.runtimeDir, this.name);
    this.store = new RecordStore(options.directory, this.name, newId());
    this.qemuImg = new QemuImg(options.qemuImg ?? 'qemu-img', this.name, {
      timeoutMs: options.qemuImgTimeoutMs ?? DEFAULT_QEMU_IMG_TIMEOUT_MS,
      stallMs: options.qemuImgStallMs ?? DEFAULT_QEMU_IMG_STALL_MS,
    });
    this.runtime = new Runtime({
      driver: this.name,
      binary: options.qemuStorageDaemon ?? 'qemu-storage-daemon',
      runtimeDir,
      commandTimeoutMs: timeout ?? DEFAULT_COMMAND_TIMEOUT_MS,
      stopTimeoutMs: options.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS,
      store: this.store,
      qemuImg: this.qemuImg,
      onSessionLost: (s) => this.sessionLost(s),
    });
    this.others = new OtherInstances(this.name, this.store, this.qemuImg, this.runtime);
    this.table = new AttachmentTable(this.name, this.store, this.runtime, this.views, this.others);
    this.changedBlockTracking = new Qcow2Checkpoints(this.store, this.runtime, this.name);
  }

  /** The directory this driver works in. */
  get directory(): string {
    return this.store.layout.directory;
  }

  /** The daemon's pid while one runs, else undefined (for supervision and crash tests). */
  daemonPid(): Promise<number | undefined> {
    return this.runtime.daemonPid();
  }

  /**
   * Creates an empty qcow2 image (no data clusters), then its sidecar, whose appearance makes the
   * volume exist. `INVALID_INPUT` for a bad size, name or metadata, and for a size above qcow2's
   * limit for 64 KiB clusters (2^51 bytes: size-limit.ts; `details.maxSize`), before anything is
   * made; errors of qemu-img and of the
   * sidecar write (`UNAVAILABLE` without space or on an I/O error). A failure leaves nothing
   * listed, or at worst a listed volume that attaches (SidecarStore.discardCreated), and the error
   * is raised. Not idempotent.
   */
  async createVolume(spec: CreateVolumeSpec): Promise<Volume> {
    return this.guard('createVolume', async () => {
      assertVolumeSize(spec?.size, this.name);
      assertWithinQcow2Limit(spec.size, MAX_VOLUME_SIZE, this.name, 'createVolume'); // before qemu-img refuses it
      if (spec.name !== undefined) assertDisplayName(spec.name, 'name', this.name);
      const metadata = spec.metadata ?? {};
      assertVolumeMetadata(metadata, 'metadata', this.name);
      await this.store.init();
      const id = newId();
      const image = this.store.layout.image('volume', id);
      const record: VolumeRecord = { format: 1, kind: 'volume', id, name: spec.name ?? '', size: spec.size, createdAt: nowIso(), metadata: { ...metadata }, checkpoints: [], writer: null };
      try {
        await this.qemuImg.create(image, spec.size);
        // Stamped from the start (volume-stamp.ts): a write outside the driver before the first
        // close (after a crash, say) makes its checkpoints not consistent. A stamp that cannot be
        // settled here (a file system refusing the clock probe) never matches: the volume has no
        // checkpoint yet, so that costs nothing, and the create does not fail for it.
        record.imageStamp = await settledImageStamp(image);
        await this.store.put(record); // the sidecar appearing is what makes the volume exist
      } catch (err) {
        await this.store.discardCreated('volume', id, [this.store.layout.image('volume', id)]);
        throw err;
      }
      return toVolume(record, 'available');
    });
  }

  /**
   * Removes the sidecar, then the image. `NOT_FOUND` if unknown; `BUSY` while attached, while a
   * view of it exists, while it has snapshots, or while another process (or driver instance) has
   * its image open (another instance's deleteVolume of it included). The check against other
   * processes and the removal are one step for them: this instance's daemon takes the image's lock
   * first (holdImage; so the daemon is started if none runs, and `UNAVAILABLE` when it cannot run)
   * and keeps it until the image is gone, so no other daemon can open or hold the image in between
   * (of two concurrent deletes from two instances, one is `BUSY`). Only the death of this daemon
   * inside that step lets go of the lock early: a death seen before the removal starts is
   * `UNAVAILABLE` and removes nothing (assertHeld). The snapshot copies are counted holding the
   * image, which a copy holds from its start to its sidecar (createSnapshot): of a deleteVolume
   * and another instance's createSnapshot, one is `BUSY` (or the snapshot `NOT_FOUND`), and no
   * snapshot outlives its volume.
   *
   * Damaged sidecars (SidecarStore's snapshotOrDamaged): a volume whose own sidecar is damaged (an
   * `error` volume) is deleted as any other, image included, under the same refusals. A damaged
   * snapshot sidecar counts as a snapshot of this volume when its bytes name it (`BUSY`, naming
   * it: deleteSnapshot removes it); one that names no volume, or another, does not stop the delete
   * — a snapshot copy is a whole image of its own, which needs nothing of its volume's, so the
   * damaged snapshot keeps its files and stays deletable by its id.
   */
  async deleteVolume(volumeId: string): Promise<void> {
    return this.guard('deleteVolume', () =>
      this.runtime.locks.run(volumeId, async () => {
        await this.store.volumeOrDamaged(volumeId); // NOT_FOUND if unknown; a damaged one is deleted too
        if (this.table.usesVolume(volumeId)) throw this.err('BUSY', `volume ${volumeId} is attached`);
        const assertNoSnapshots = async (): Promise<void> => {
          const views = [...this.views.values()].filter((v) => v.info.volumeId === volumeId).map((v) => v.info.id);
          const { records, damaged } = await this.store.snapshotListing();
          const copies = records.filter((s) => s.volumeId === volumeId).map((s) => s.id);
          const unreadable = damaged.filter((d) => d.volumeId === volumeId).map((d) => `${d.id} (its sidecar is damaged)`);
          const all = [...views, ...copies, ...unreadable];
          if (all.length > 0) throw this.err('BUSY', `volume ${volumeId} has snapshots: ${all.join(', ')}`);
        };
        await assertNoSnapshots();
        await this.assertClosed(volumeId);
        const image = this.store.layout.image('volume', volumeId);
        const hold = await this.holdFile(image, volumeId);
        try {
          await assertNoSnapshots(); // a copy another instance made meanwhile
          this.assertHeld(hold, `volume ${volumeId}`);
          await this.store.remove('volume', volumeId);
          await rm(image, { force: true });
        } finally {
          // The image is gone (or the removal failed): a release that fails is queued and retried
          // (DeferredWork), and it does not undo the deletion.
          await hold?.release().catch(() => {});
        }
      }),
    );
  }

  /**
   * `NOT_FOUND` if unknown. Size: see describe; status: see statusOf. A volume whose sidecar is
   * damaged is shown as listVolumes shows it (status `error`), so that it can be deleted.
   */
  async getVolume(volumeId: string): Promise<Volume> {
    return this.guard('getVolume', async () => {
      const found = await this.store.volumeOrDamaged(volumeId);
      return found.damaged ? this.describeDamaged(found.damaged) : this.describe(found.record);
    });
  }

  /**
   * Every volume, ordered by creation. Size: see describe; status: see statusOf. A damaged sidecar
   * stops nothing: its volume is listed with status `error` (describeDamaged) and every other as usual.
   */
  async listVolumes(): Promise<Volume[]> {
    return this.guard('listVolumes', async () => {
      const { records, damaged } = await this.store.volumeListing();
      const volumes = await Promise.all([...records.map((r) => this.describe(r)), ...damaged.map((d) => this.describeDamaged(d))]);
      return volumes.sort((a, b) => ordinal(a.createdAt, b.createdAt) || ordinal(a.id, b.id));
    });
  }

  /** A volume whose sidecar is damaged (toDamagedVolume): the size is its image's, when its header reads. */
  private async describeDamaged(d: DamagedSidecar): Promise<Volume> {
    return toDamagedVolume(d, (await qcow2ImageFacts(this.store.layout.image('volume', d.id))).size);
  }

  /**
   * The volume as reported. Its size is the image's (the virtual size in its header), which is
   * what an attach serves and what a snapshot of it holds: after an extendVolume that died between
   * `block_resize` and its sidecar write the image is larger than the sidecar says, and the sidecar
   * catches up only at the next extend to that size (growImage). Reporting the sidecar's size would
   * tell callers a smaller volume than the device they attach (core's flow would refuse to restore
   * a backup of it into it). Only when the header cannot be read (a missing or damaged image,
   * which attach reports itself) is it the sidecar's size. A volume whose image is qcow2
   * version 2 (made outside the driver) has `capabilities: { changedBlockTracking: false }`: it
   * cannot hold the bitmaps of checkpoints (Qcow2Checkpoints.createCheckpoint refuses them).
   */
  private async describe(r: VolumeRecord): Promise<Volume> {
    const [facts, status] = await Promise.all([qcow2ImageFacts(this.store.layout.image('volume', r.id)), this.statusOf(r)]);
    return withImageCapabilities(toVolume({ ...r, size: facts.size ?? r.size }, status), facts);
  }

  /**
   * `in-use` while attached read-write here, or by another instance or process (its writer mark,
   * with its daemon holding the image: see OtherInstances); else `available`.
   */
  private async statusOf(r: VolumeRecord): Promise<Volume['status']> {
    if (this.table.hasWriter(r.id)) return 'in-use';
    return (await this.others.writesElsewhere(r)) ? 'in-use' : 'available';
  }

  /**
   * Replaces the metadata in the volume's sidecar: one read-modify-write of it (SidecarStore's
   * updateVolume), written by core's atomic write, so the sidecar holds all of the old record or
   * all of the new. Other instances change a volume's sidecar only while their daemon has its
   * image (attach, checkpoints, extend, delete), so this holds the image too: when this instance's
   * daemon has it open (attached here, a view) that open already excludes the others; otherwise
   * its daemon takes the image's lock for the write (holdImage, as deleteVolume does; the daemon
   * is started if none runs, `UNAVAILABLE` when it cannot run), `BUSY` while another process or
   * driver instance has the image open, and `UNAVAILABLE` (nothing changed) when the daemon died
   * while holding it. Serialized with this instance's attach, extend and delete (the volume's
   * lock). `NOT_FOUND` for an unknown volume, and for one whose image file is missing (no lock to
   * take: nothing changed); `INVALID_INPUT` (assertVolumeMetadata) changes nothing.
   */
  async setVolumeMetadata(volumeId: string, metadata: Record<string, string>): Promise<Volume> {
    return this.guard('setVolumeMetadata', () =>
      this.runtime.locks.run(volumeId, async () => {
        assertVolumeMetadata(metadata, 'metadata', this.name);
        await this.store.volume(volumeId);
        const replace = async (): Promise<Volume> =>
          this.describe(
            await this.store.updateVolume(volumeId, (r) => {
              r.metadata = { ...metadata };
              return { ...r };
            }),
          );
        await this.runtime.finishDeferred(volumeId);
        if (await this.runtime.isOpen(volumeId)) return replace();
        const image = this.store.layout.image('volume', volumeId);
        const hold = await this.holdFile(image, volumeId);
        // No image, no lock to take: nothing would order this write after another instance's
        // deleteVolume (which removes such a volume's sidecar unheld), and the volume could
        // reappear. The record is left as it is.
        if (!hold) throw this.err('NOT_FOUND', `volume ${volumeId} has no image (${image} is missing): its metadata is not changed`);
        try {
          this.assertHeld(hold, `volume ${volumeId}`);
          return await replace();
        } finally {
          await hold.release().catch(() => {}); // as in deleteVolume
        }
      }),
    );
  }

  /**
   * Grows the volume (the new tail reads as zeros). qemu cannot mark the new tail dirty, so every
   * checkpoint of the volume becomes inconsistent (the next backup is full). `INVALID_INPUT` when
   * shrinking, and for a size above what a qcow2 image with the image's cluster size can hold
   * (2^51 bytes for the driver's 64 KiB clusters: size-limit.ts; `details.maxSize`), both before
   * anything is changed (the checkpoints stay); `BUSY` while attached, while a view of it exists, or while another process (or
   * driver instance) has its image open — also for the current size, which then changes nothing.
   * The check against other processes and the resize are one step for them: this instance's
   * daemon opens the image (so the daemon is started if none runs, and `UNAVAILABLE` when it
   * cannot run), which fails with `BUSY` while another daemon has it, and keeps it open until the
   * sidecar holds the new size; meanwhile no other instance can extend, attach or delete it (see
   * growImage). Of two concurrent extends from two instances, each either gets its size, or `BUSY`,
   * or `INVALID_INPUT` when the other made the volume larger first. Idempotent (the current size
   * changes nothing).
   */
  async extendVolume(volumeId: string, size: number): Promise<Volume> {
    return this.guard('extendVolume', () =>
      this.runtime.locks.run(volumeId, async () => {
        const current = await this.store.volume(volumeId);
        assertVolumeSize(size, this.name);
        if (size < current.size) throw this.err('INVALID_INPUT', `cannot shrink volume ${volumeId} from ${current.size} to ${size}`);
        // Before anything is changed: growImage drops the checkpoints before block_resize, which would refuse this size.
        assertWithinQcow2Limit(size, await imageMaxSize(this.store.layout.image('volume', volumeId)), this.name, `extendVolume ${volumeId}`);
        if (this.table.usesVolume(volumeId) || [...this.views.values()].some((v) => v.info.volumeId === volumeId)) {
          throw this.err('BUSY', `volume ${volumeId} is attached`);
        }
        await this.assertClosed(volumeId);
        const { session, node } = await this.runtime.openVolume(volumeId); // BUSY while another daemon has the image
        try {
          const grown = toVolume(await growImage(session, node, this.store, volumeId, size, this.name), 'available');
          return withImageCapabilities(grown, await qcow2ImageFacts(this.store.layout.image('volume', volumeId)));
        } finally {
          // Closing writes the image's metadata. The change is committed: a close that fails stays
          // queued on the node (retried, and reported by the volume's next use) and does not fail the call.
          await this.runtime.releaseVolume(session, volumeId).catch(() => {});
        }
      }),
    );
  }

  /**
   * Takes a crash-consistent snapshot. While the volume's image is open in the daemon (attached,
   * or held by another view) it is a fleecing view: O(1), read-only, living until deleteSnapshot,
   * `close()` or the daemon's death. Otherwise it is a durable sparse copy of the image with its
   * bitmaps (`qemu-img convert --bitmaps`), made while this instance's daemon holds the image's
   * lock (holdImage; the daemon is started if none runs, `UNAVAILABLE` when it cannot run) until
   * the copy's sidecar is written: `BUSY` while another process or driver instance has the image
   * open. Either way it has the image's size, as an attach of the
   * volume serves it (larger than the sidecar's after an interrupted extend). `NOT_FOUND` for an
   * unknown volume. A failed copy leaves nothing listed, or at worst a listed snapshot that
   * attaches (SidecarStore.discardCreated). Not idempotent.
   */
  async createSnapshot(volumeId: string, name?: string): Promise<Snapshot> {
    return this.guard('createSnapshot', () =>
      this.runtime.locks.run(volumeId, async () => {
        if (name !== undefined) assertDisplayName(name, 'name', this.name);
        await this.store.volume(volumeId);
        await this.runtime.finishDeferred(volumeId); // may close a node nothing else uses
        const session = await this.runtime.running();
        const image = this.store.layout.image('volume', volumeId);
        const node = session?.nodeOf(image);
        if (session && node) {
          await session.openNode(image, false); // the view's own reference
          let view: FleecingView | undefined;
          try {
            await this.runtime.settleVolume(session, node, volumeId); // a view freezes the chain: it must be trusted
            const { checkpoints } = await this.store.volume(volumeId);
            const overlayPath = (id: string): string => this.store.layout.overlay(id);
            // The overlay must be exactly as large as the node (qemu refuses otherwise), and that is
            // also what the volume's attachments serve — the image's size, not the sidecar's.
            const size = await imageSize(session, node, this.name);
            view = await prepareView({ session, qemuImg: this.qemuImg, volumeId, name: name ?? '', size, node, checkpoints, overlayPath });
            await startView(view, checkpoints);
          } catch (err) {
            // A started view may exist even so (no reply in time): retiring it also drops the reference.
            if (view) await this.retireView(view).catch(() => {});
            else await session.releaseNode(image, volumeId).catch(() => {}); // a failed close stays queued (releaseNode)
            throw err;
          }
          session.filters.push(node, view.filter);
          this.views.set(view.info.id, view);
          return { ...view.info };
        }
        // Held from before the copy until its sidecar is written: no other instance writes the
        // image meanwhile (its attach is BUSY), and its deleteVolume, which counts snapshots
        // holding the image, is BUSY. A volume deleted before is NOT_FOUND here.
        const hold = await this.holdFile(image, volumeId);
        try {
          await checkVolumeStamp(this.store, volumeId, await imageStampNow(this.store, 'volume', volumeId)); // written outside the driver: the copy trusts no checkpoint
          return toSnapshot(await this.copySnapshot(await this.store.volume(volumeId), image, name ?? '', () => hold?.held() ?? false));
        } finally {
          await hold?.release().catch(() => {}); // a failed release is queued and retried (DeferredWork)
        }
      }),
    );
  }

  /**
   * A durable sparse copy of the closed image at `image` with its bitmaps, then its sidecar, which
   * holds the copy's image stamp (volume-stamp.ts: each attach of the copy checks it). The
   * caller holds the image (holdFile), so the copy reads it shared (`-U`). `held` tells whether
   * that hold still stands: it is asked once the sidecar is written, and if the hold was lost
   * (its daemon died, somewhere between the copy's start and now) the snapshot is discarded and
   * the call fails with `UNAVAILABLE` — meanwhile another instance could have written the image
   * under the copy or deleted the volume. A failed copy leaves nothing listed, or at worst a
   * listed snapshot that attaches (SidecarStore.discardCreated).
   */
  private async copySnapshot(record: VolumeRecord, image: string, name: string, held: () => boolean): Promise<SnapshotRecord> {
    const snap: SnapshotRecord = {
      format: 1,
      kind: 'snapshot',
      id: newId(),
      volumeId: record.id,
      name,
      size: record.size,
      createdAt: nowIso(),
      checkpoints: record.checkpoints.map((c) => ({ ...c })),
    };
    const copy = this.store.layout.image('snapshot', snap.id);
    try {
      await this.qemuImg.copyWithBitmaps(image, copy, true);
      const copied = await this.qemuImg.describe(copy);
      // The size of what was copied, which is what an attach of the volume serves (larger than
      // the sidecar's after an extend that died between `block_resize` and its sidecar write).
      snap.size = copied.size;
      // The closed image's bitmaps were never reconciled with the sidecar: judge what was copied.
      snap.checkpoints = copiedCheckpoints(record.checkpoints, copied.bitmaps, copied.size !== record.size);
      // The copy as made (volume-stamp.ts): the driver never writes it again, and each attach
      // compares it, so a write to the copy outside the driver makes its checkpoints not consistent.
      snap.imageStamp = await settledImageStamp(copy);
      await this.store.put(snap); // the sidecar appearing is what makes the snapshot exist
      if (!held()) throw this.err('UNAVAILABLE', `qemu-storage-daemon exited while it held volume ${record.id}'s image for a snapshot copy: the copy is not trusted`);
    } catch (err) {
      // All or nothing, whichever step failed (the sidecar may have landed although its write failed).
      await this.store.discardCreated('snapshot', snap.id, [copy]);
      throw err;
    }
    return snap;
  }

  /**
   * `NOT_FOUND` if unknown; `BUSY` while attached here, or — a copy — while another process or
   * driver instance has it open (attached): as deleteVolume does, this instance's daemon takes
   * the copy's lock (holdImage; the daemon is started if none runs, `UNAVAILABLE` when it cannot
   * run) and keeps it until the copy is gone. A copy whose sidecar is damaged is deleted too,
   * sidecar and image (nothing else reads a copy: it is no image's backing file); when its bytes
   * name no volume, its own id keys the lock in place of its volume's.
   */
  async deleteSnapshot(snapshotId: string): Promise<void> {
    return this.guard('deleteSnapshot', async () => {
      const view = this.views.get(snapshotId);
      const found = view ? undefined : await this.store.snapshotOrDamaged(snapshotId);
      const volumeId = view?.info.volumeId ?? found?.record?.volumeId ?? found?.damaged?.volumeId ?? snapshotId;
      await this.runtime.locks.run(volumeId, async () => {
        if (this.table.usesSnapshot(snapshotId)) throw this.err('BUSY', `snapshot ${snapshotId} is attached`);
        if (view) {
          if (!this.views.delete(snapshotId)) return;
          await this.retireView(view);
          return;
        }
        await this.store.snapshotOrDamaged(snapshotId); // NOT_FOUND once deleted meanwhile
        const copy = this.store.layout.image('snapshot', snapshotId);
        const hold = await this.holdFile(copy, volumeId);
        try {
          this.assertHeld(hold, `snapshot ${snapshotId}`);
          await this.store.remove('snapshot', snapshotId);
          await rm(copy, { force: true });
        } finally {
          await hold?.release().catch(() => {}); // as in deleteVolume
        }
      });
    });
  }

  /**
   * Views and copies of a volume, oldest first. `NOT_FOUND` for an unknown volume; a volume whose
   * own sidecar is damaged lists its snapshots too. A copy whose sidecar is damaged is left out
   * (there is no record to show; deleteVolume names those whose bytes name the volume), and stops
   * no listing.
   */
  async listSnapshots(volumeId: string): Promise<Snapshot[]> {
    return this.guard('listSnapshots', async () => {
      await this.store.volumeOrDamaged(volumeId);
      const copies = (await this.store.snapshotListing()).records.filter((s) => s.volumeId === volumeId).map(toSnapshot);
      const views = [...this.views.values()].filter((v) => v.info.volumeId === volumeId).map((v) => ({ ...v.info }));
      return [...copies, ...views].sort((a, b) => ordinal(a.createdAt, b.createdAt));
    });
  }

  /**
   * Attaches through a new NBD export. A volume has one `rw` attachment or any number of `ro`
   * ones in this instance: a conflicting attach is `BUSY` and changes nothing. `BUSY` too when
   * another process (or driver instance) has the image open, whatever the modes: its daemon holds
   * the image's locks. Snapshots attach read-only only (`INVALID_INPUT` for `rw`) and never
   * conflict with their volume. `NOT_FOUND` if unknown.
   */
  async attach(target: AttachTarget, mode: AttachMode): Promise<Attachment> {
    return this.guard('attach', () => this.table.attach(target, mode));
  }

  /**
   * Flushes a read-write device, disconnects, removes the export and closes unused nodes.
   * Idempotent. Bounded; UNAVAILABLE when the daemon stalls (see AttachmentTable.detach), with
   * `details.leftBehind` when SIGKILL cannot end it either (its image stays locked).
   */
  async detach(attachmentId: string): Promise<void> {
    return this.guard('detach', () => this.table.detach(attachmentId));
  }

  /**
   * Detaches everything, tears views down and stops the daemon cleanly (`quit`, so qemu writes
   * the persistent bitmaps into the images). Later calls that need the daemon fail with
   * `UNAVAILABLE`. Idempotent. Bounded: `UNAVAILABLE` with `details.leftBehind` when a daemon (the
   * running one, or one a detach gave up on) has not exited after its SIGKILL (Runtime.close); a
   * later call waits for it again.
   */
  async close(): Promise<void> {
    await this.table.detachAll();
    for (const view of [...this.views.values()]) await this.deleteSnapshot(view.info.id).catch(() => {});
    await this.runtime.close();
  }

  /**
   * Tears a view down (destroyView), drops its filter and its reference on the volume's node. When
   * that fails — the daemon does not answer in time (qemu may still run what was sent), or refuses
   * a step — the rest is queued on the node (DaemonSession.deferred) and retried until it succeeds:
   * before the volume's next attach, snapshot, checkpoint, extend or delete (which fail with its
   * error while it still fails), and on the session's retry timer without any use (never after
   * its daemon died). The reference keeps the node open until then. The error is thrown. Callers
   * hold the volume's lock.
   */
  private retireView(view: FleecingView): Promise<void> {
    const { session } = view;
    let released = false;
    return session.deferred.attempt(view.node, view.info.volumeId, async () => {
      await destroyView(view);
      session.filters.remove(view.node, view.filter); // the view's session's own: names repeat across sessions
      if (released) return;
      released = true; // at most once: a failed close stays queued on its own (releaseNode)
      await session.releaseNode(this.store.layout.image('volume', view.info.volumeId), view.info.volumeId);
    });
  }

  /**
   * Takes the lock of the image file at `path` in this instance's daemon (holdImage; the daemon
   * is started if none runs), after finishing the work deferred here under `volumeId`
   * (Runtime.finishPending: a queued close of a node of it, or a queued release of an earlier
   * hold). Resolves to the release and `held` (false once the daemon that holds it exited: the
   * lock went with it), or undefined when there is no such file (nobody can hold it). `BUSY`
   * while another process or driver instance, or a node of this daemon, has it open. Callers hold
   * the volume's lock (`volumeId`: the volume of the image or snapshot copy).
   */
  private async holdFile(path: string, volumeId: string): Promise<{ release: () => Promise<void>; held: () => boolean } | undefined> {
    const session = await this.runtime.session();
    await this.runtime.finishPending(session, volumeId); // its own failed release of an earlier hold included
    const release = await holdImage(session, path, volumeId, this.name).catch((err: CairnError) => {
      if (err.code === 'NOT_FOUND') return undefined;
      throw err;
    });
    return release && { release, held: () => session.alive };
  }

  /**
   * `UNAVAILABLE` when the daemon that held an image (holdFile) has exited since: its lock went
   * with it, so another instance may have the image open by now, and nothing may be removed.
   * No hold (no such file) passes. What dies after this check and before the removal is not seen.
   */
  private assertHeld(hold: { held: () => boolean } | undefined, what: string): void {
    if (hold && !hold.held()) throw this.err('UNAVAILABLE', `qemu-storage-daemon exited while it held the image of ${what}; nothing was removed`);
  }

  /** BUSY while the daemon holds the volume's image open, after finishing work deferred on it. Callers hold the lock. */
  private async assertClosed(volumeId: string): Promise<void> {
    await this.runtime.finishDeferred(volumeId);
    if (await this.runtime.isOpen(volumeId)) throw this.err('BUSY', `volume ${volumeId} is open in qemu-storage-daemon`);
  }

  /** The daemon died: its attachments fail from now on and its views are gone. */
  private sessionLost(session: DaemonSession): void {
    this.table.dropSession(session);
    for (const [id, view] of this.views) {
      if (view.session !== session) continue;
      this.views.delete(id);
      void rm(view.overlayPath, { force: true });
    }
  }

  private err(code: CairnError['code'], message: string): CairnError {
    return new CairnError(code, message, { driver: this.name });
  }

  private async guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toCairnError(err, this.name, what);
    }
  }
}
