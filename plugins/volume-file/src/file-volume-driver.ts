import { constants } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import {
  attachConflict,
  hasCode,
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
  type ImageStamp,
  type Snapshot,
  type Volume,
  type VolumeDriver,
  type VolumeDriverCapabilities,
} from '@cairn/core';
import { ChangeTracker } from './change-tracker.js';
import { openNewOwned } from './dir-owner.js';
import { finishDeletion, finishDeletions, markDeleting, removeRecordFiles } from './deletion.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import { DriverContext } from './driver-context.js';
import { withFailedUndo } from './failed-undo.js';
import { FileBlockDevice, GRANULARITY } from './file-block-device.js';
import { FileCheckpoints } from './file-checkpoints.js';
import { resizeImage } from './image-size.js';
import type { RecordKind } from './layout.js';
import { namingFullDisk } from './no-space.js';
import { OwnImageChange } from './own-change.js';
import { parseFileVolumeOptions, type FileVolumeDriverOptions } from './options.js';
import { toSnapshot, toVolume, type SnapshotRecord, type VolumeRecord } from './records.js';
import { createSnapshotFiles } from './snapshot-files.js';
import { ORPHAN_AGE_MS, sweepLeftovers } from './leftover-age.js';
import { orphanSnapshotEntry } from './snapshot-orphans.js';
import { sidecarTempEntry } from './sidecar-temps.js';
import { orphanVolumeEntry } from './volume-orphans.js';
import { holdWriterLock, writerAlive } from './writer-lock.js';

export type { FileVolumeDriverOptions } from './options.js';

/**
 * The embedded default volume driver: each volume is a sparse raw image file with a JSON sidecar
 * under `directory`; snapshots are reflinks or sparse copies; changed blocks are tracked by dirty
 * bitmaps; flock(2) keeps two processes from writing one image. See README.md.
 */
export class FileVolumeDriver implements VolumeDriver {
  readonly name = 'file';
  readonly capabilities: VolumeDriverCapabilities = {
    snapshots: true,
    changedBlockTracking: true,
    quiesce: false,
    flowOverride: false,
    attach: true,
    multiAttachReadOnly: true,
    volumeMetadata: true,
  };
  readonly changedBlockTracking: FileCheckpoints;
  private readonly ctx: DriverContext;
  private readonly attachments = new Map<string, Attachment>();
  /**
   * The volumes and snapshots (`<kind>:<id>`) whose deletion killed midway this instance's listings
   * finished and no delete has asked for since: the first delete of one of them succeeds, and
   * takes it out (retryKilledDeletion). One entry per killed deletion found and not retried.
   */
  private readonly finishedDeletions = new Set<string>();

  /** `INVALID_INPUT` naming the option for a missing `directory` or an unknown option (parseFileVolumeOptions). */
  constructor(options: FileVolumeDriverOptions) {
    this.ctx = new DriverContext(this.name, parseFileVolumeOptions(options).directory);
    this.changedBlockTracking = new FileCheckpoints(this.ctx);
  }

  /** The directory this driver works in. */
  get directory(): string {
    return this.ctx.store.layout.directory;
  }

  /**
   * Creates a sparse zero-filled image. `INVALID_INPUT` for a bad size (also one the file system
   * refuses for a file), name or metadata; `UNAVAILABLE` without space, naming the file (image,
   * sidecar, lock file, directory) that could not be written (details.file, no-space.ts). A failure
   * leaves no image and no sidecar behind (should the sidecar stay because it cannot be removed,
   * its image stays too: the volume is listed and usable). Not idempotent.
   */
  async createVolume(spec: CreateVolumeSpec): Promise<Volume> {
    return this.guard('createVolume', async () => {
      assertVolumeSize(spec?.size, this.name);
      if (spec.name !== undefined) assertDisplayName(spec.name, 'name', this.name);
      const metadata = spec.metadata ?? {};
      assertVolumeMetadata(metadata, 'metadata', this.name);
      await this.ctx.store.init();
      const id = newId();
      const image = this.ctx.store.layout.image('volume', id);
      // 'wx', with the directory's owner; no inode left fails it UNAVAILABLE naming the image (no-space.ts)
      const fh = await namingFullDisk(image, 'creating image', this.name, () => openNewOwned(image, constants.O_WRONLY, 0o600));
      try {
        try {
          await namingFullDisk(image, 'creating image', this.name, async () => {
            await resizeImage(fh, spec.size, this.name);
            await fh.sync();
          });
        } finally {
          await fh.close();
        }
        const record: VolumeRecord = {
          format: 1,
          kind: 'volume',
          id,
          name: spec.name ?? '',
          size: spec.size,
          createdAt: nowIso(),
          metadata: { ...metadata },
          checkpoints: [],
          writer: null,
        };
        await this.ctx.store.put(record); // the sidecar appearing is what makes the volume exist
        return toVolume(record, 'available');
      } catch (err) {
        // Nothing listed, or at worst a listed volume that attaches (SidecarStore.discardCreated).
        await this.ctx.store.discardCreated('volume', id, [image]);
        throw err;
      }
    });
  }

  /**
   * `NOT_FOUND` if unknown; `BUSY` while attached (here or by another process) or while it has
   * snapshots. The snapshot check is made holding the image's exclusive lock, which a snapshot
   * holds (shared) from its copy to its sidecar: a snapshot another instance or process takes
   * concurrently either is seen (`BUSY`) or fails itself (`BUSY`, or `NOT_FOUND` once the volume
   * is gone); no snapshot outlives its volume. A retry of a deletion killed midway finishes it and
   * succeeds (retryKilledDeletion).
   *
   * Damaged sidecars (SidecarStore's volumeOrDamaged): a volume whose own sidecar is damaged (an
   * `error` volume) is deleted as any other, under the same refusals. A damaged snapshot sidecar
   * counts as a snapshot of this volume when its bytes name it (`BUSY`, naming it: deleteSnapshot
   * removes it); one that names no volume, or another, does not stop the delete — a snapshot is a
   * whole copy, which needs nothing of its volume's image, so it keeps its files and stays
   * deletable by its id.
   */
  async deleteVolume(volumeId: string): Promise<void> {
    return this.guard('deleteVolume', () =>
      this.ctx.targets.run(`volume:${volumeId}`, async () => {
        if (!(await this.retryKilledDeletion('volume', () => this.ctx.store.volumeOrDamaged(volumeId), volumeId))) return;
        if (this.attachedHere('volume', volumeId)) throw this.ctx.err('BUSY', `volume ${volumeId} is attached`);
        await this.removeFiles('volume', volumeId, async () => {
          const { records, damaged } = await this.ctx.store.snapshotListing();
          const copies = records.filter((s) => s.volumeId === volumeId).map((s) => s.id);
          const unreadable = damaged.filter((d) => d.volumeId === volumeId).map((d) => `${d.id} (its sidecar is damaged)`);
          const all = [...copies, ...unreadable];
          if (all.length > 0) throw this.ctx.err('BUSY', `volume ${volumeId} has snapshots: ${all.join(', ')}`);
        });
      }),
    );
  }

  /** `NOT_FOUND` if unknown. A volume whose sidecar is damaged is shown as listVolumes shows it (status `error`), so that it can be deleted. */
  async getVolume(volumeId: string): Promise<Volume> {
    return this.guard('getVolume', async () => {
      const found = await this.ctx.store.volumeOrDamaged(volumeId);
      if (found.damaged) return this.describeDamaged(found.damaged);
      return toVolume(found.record, await this.statusOf(found.record));
    });
  }

  /** A volume whose sidecar is damaged (toDamagedVolume): the size is its image file's, when there is one. */
  private async describeDamaged(d: DamagedSidecar): Promise<Volume> {
    const size = await stat(this.ctx.store.layout.image('volume', d.id)).then(
      (st) => (st.isFile() ? st.size : undefined),
      () => undefined,
    );
    return toDamagedVolume(d, size);
  }

  /**
   * Every volume in the directory, ordered by creation. A damaged sidecar stops nothing: its volume
   * is listed with status `error` (describeDamaged), every other as usual. First,
   * before any sidecar is read (so a damaged one does not stop them), finishes the deletions
   * killed midway, whose images would otherwise keep their space (finishDeletions, deletion.ts;
   * best effort): the volumes' among the names of the same one read
   * of `volumes/` that lists them (a volume whose deletion began is never listed: it has no
   * `<id>.json`), and the snapshots' from a read of `snapshots/`. Nothing this listing shows is
   * made wrong by a snapshot deletion left midway (it is listed nowhere, and deleteVolume counts
   * only snapshots with a sidecar); `snapshots/` is read here only so that the space of such a
   * copy — as large as its volume — comes back at the next listing of any kind: a caller that only
   * polls listVolumes (a scheduler, a status page) may never list that volume's snapshots.
   */
  async listVolumes(): Promise<Volume[]> {
    return this.guard('listVolumes', async () => {
      const { layout } = this.ctx.store;
      const names = await this.ctx.store.names('volume');
      this.remember('volume', await finishDeletions(layout, 'volume', this.name, names));
      this.remember('snapshot', await finishDeletions(layout, 'snapshot', this.name));
      const { records, damaged } = await this.ctx.store.volumeListing(names);
      const out: Volume[] = [];
      for (const r of records) out.push(toVolume(r, await this.statusOf(r)));
      for (const d of damaged) out.push(await this.describeDamaged(d));
      return out.sort((a, b) => ordinal(a.createdAt, b.createdAt) || ordinal(a.id, b.id));
    });
  }

  /**
   * Replaces the metadata in the volume's sidecar: one read-modify-write of it (SidecarStore's
   * updateVolume, holding the metadata lock, across processes too), written by core's atomic
   * write, so the sidecar holds all of the old record or all of the new. Serialized with this
   * instance's attach, extend and delete of the volume (its target lock); another process's delete
   * removes the sidecar holding the metadata lock, so this finds it or is `NOT_FOUND`, never
   * bringing it back. Allowed while attached, here or elsewhere (the writer mark and checkpoints
   * are read and written back as they are). `INVALID_INPUT` (assertVolumeMetadata) changes nothing.
   */
  async setVolumeMetadata(volumeId: string, metadata: Record<string, string>): Promise<Volume> {
    return this.guard('setVolumeMetadata', async () => {
      assertVolumeMetadata(metadata, 'metadata', this.name);
      const record = await this.ctx.targets.run(`volume:${volumeId}`, () =>
        this.ctx.store.updateVolume(volumeId, (r) => {
          r.metadata = { ...metadata };
          return { ...r };
        }),
      );
      return toVolume(record, await this.statusOf(record));
    });
  }

  /**
   * Grows the image (sparse) to `size`; the new tail counts as changed for every checkpoint.
   * `INVALID_INPUT` when shrinking, for a size the file system refuses for a file, or — on a volume
   * with checkpoints — beyond what a dirty bitmap tracks; `UNAVAILABLE` without space; a failure
   * changes nothing. `BUSY` while attached here or by another process.
   */
  async extendVolume(volumeId: string, size: number): Promise<Volume> {
    return this.guard('extendVolume', async () => {
      await this.ctx.targets.run(`volume:${volumeId}`, async () => {
        const current = await this.ctx.store.volume(volumeId);
        assertVolumeSize(size, this.name);
        if (size < current.size) throw this.ctx.err('INVALID_INPUT', `cannot shrink volume ${volumeId} from ${current.size} to ${size}`);
        if (this.attachedHere('volume', volumeId)) throw this.ctx.err('BUSY', `volume ${volumeId} is attached`);
        const image = this.ctx.store.layout.image('volume', volumeId);
        await this.ctx.locks.during(image, 'exclusive', () => this.grow(volumeId, image, size));
      });
      return this.getVolume(volumeId);
    });
  }

  /**
   * extendVolume's work, holding the exclusive lock. `INVALID_INPUT`, changing nothing, when the
   * sidecar now says more than `size` (grown by another process since extendVolume's check, which
   * reads the sidecar before the lock). The sidecar and grown bitmaps are saved
   * before the image grows, so that a crash in between leaves an image shorter than its sidecar,
   * which attach heals; when the image cannot grow, they are put back as they were (should that
   * fail too, the resize's error is thrown, with the other in `details.undoError`). Image stamps
   * are settled before the metadata lock is taken (settling may wait one tick of a coarse clock,
   * which would hold up every metadata change of the directory, in every process): recovery by
   * `recovered` (whose recheck under the lock is one stat), the new stamp once the image has grown.
   * The image is compared with its stamp again right before it grows, and around the new stamp
   * (OwnImageChange): a write from outside the driver made while the bitmaps were saved makes
   * every checkpoint inconsistent instead of being absorbed by the new stamp.
   */
  private async grow(volumeId: string, image: string, size: number): Promise<void> {
    const { ctx } = this;
    const before = new Map<string, DirtyBitmap>();
    let oldSize = 0;
    let reference: ImageStamp | undefined;
    await ctx.recovered(volumeId);
    await ctx.store.updateVolume(volumeId, async (r) => {
      // The size extendVolume checked was read before the lock: another process may have grown the
      // volume since, and truncating to `size` would then cut off its tail.
      if (size < r.size) throw ctx.err('INVALID_INPUT', `cannot shrink volume ${volumeId} from ${r.size} to ${size}`);
      await ctx.recover(r);
      reference = r.imageStamp;
      oldSize = r.size;
      const tracked = r.checkpoints.filter((x) => x.consistent);
      if (tracked.length > 0 && size > DirtyBitmap.maxSize(GRANULARITY)) {
        throw ctx.err('INVALID_INPUT', `volume ${volumeId} has checkpoints, whose bitmaps track at most ${DirtyBitmap.maxSize(GRANULARITY)} bytes, not ${size}`);
      }
      for (const c of tracked) {
        const bitmap = await ctx.loadBitmap('volume', volumeId, c.id, r.size);
        if (!bitmap) {
          c.consistent = false;
          continue;
        }
        before.set(c.id, bitmap.clone());
        bitmap.grow(size);
        await ctx.saveBitmap('volume', volumeId, c.id, bitmap);
      }
      r.size = size;
    });
    let own: OwnImageChange;
    try {
      own = await OwnImageChange.begin(ctx, volumeId, reference);
      await namingFullDisk(image, 'growing image', this.name, () => resizeImage(image, size, this.name));
    } catch (err) {
      // Should putting them back fail too, the sidecar keeps the new size of an image still of the
      // old one, which attach heals (above); the resize's error stays the one thrown (withFailedUndo).
      await ctx.store
        .updateVolume(volumeId, async (r) => {
          for (const [id, bitmap] of before) await ctx.saveBitmap('volume', volumeId, id, bitmap);
          r.size = oldSize;
        })
        .catch((undoErr: unknown) => {
          throw withFailedUndo(err, undoErr, this.name, 'extendVolume');
        });
      throw err;
    }
    // The grown image is the driver's own change. Should this fail, the stale stamp only makes
    // the checkpoints inconsistent at the next check (a full backup, never a wrong incremental).
    await own.record().catch(() => {});
  }

  /**
   * A crash-consistent copy of the volume (writes through this driver pause during it) with its
   * checkpoints' bitmaps. `NOT_FOUND` if unknown; `BUSY` while another process writes the volume.
   * First removes what snapshot creates killed midway (and deletes killed midway by an older
   * driver version) left behind over a day ago (sweepLeftovers with orphanSnapshotEntry: image
   * copies and bitmap directories without a sidecar), and likewise the images of volume creates
   * killed midway (orphanVolumeEntry) and the temp files of sidecar writes killed midway
   * (sidecarTempEntry).
   */
  async createSnapshot(volumeId: string, name?: string): Promise<Snapshot> {
    return this.guard('createSnapshot', () =>
      this.ctx.targets.run(`volume:${volumeId}`, async () => {
        await this.ctx.store.volume(volumeId);
        if (name !== undefined) assertDisplayName(name, 'name', this.name);
        const { layout } = this.ctx.store;
        // A killed create's copy, or a killed createVolume's image, would keep its space for ever;
        // each directory is read once for every kind of leftover in it.
        const snapshotOrphan = orphanSnapshotEntry(layout);
        const volumeOrphan = orphanVolumeEntry(layout);
        await sweepLeftovers(layout.dir('snapshot'), (n) => snapshotOrphan(n) ?? sidecarTempEntry(n), ORPHAN_AGE_MS, this.ctx.clock);
        await sweepLeftovers(layout.dir('volume'), (n) => volumeOrphan(n) ?? sidecarTempEntry(n), ORPHAN_AGE_MS, this.ctx.clock);
        const id = newId();
        const tracker = this.ctx.trackers.get(volumeId);
        let record: SnapshotRecord;
        if (tracker) {
          record = await tracker.gate.exclusive(async () =>
            createSnapshotFiles(this.ctx, await this.ctx.store.volume(volumeId), id, name ?? '', tracker.snapshot()),
          );
        } else {
          const image = this.ctx.store.layout.image('volume', volumeId);
          record = await this.ctx.locks.during(image, 'shared', async () =>
            createSnapshotFiles(this.ctx, await this.ctx.recovered(volumeId), id, name ?? '', undefined),
          );
        }
        return toSnapshot(record);
      }),
    );
  }

  /**
   * `NOT_FOUND` if unknown; `BUSY` while attached here or by another process. A retry of a deletion
   * killed midway finishes it and succeeds (retryKilledDeletion). A snapshot whose sidecar is
   * damaged is deleted too, sidecar, image and bitmaps (nothing else reads a snapshot's files).
   */
  async deleteSnapshot(snapshotId: string): Promise<void> {
    return this.guard('deleteSnapshot', () =>
      this.ctx.targets.run(`snapshot:${snapshotId}`, async () => {
        if (!(await this.retryKilledDeletion('snapshot', () => this.ctx.store.snapshotOrDamaged(snapshotId), snapshotId))) return;
        if (this.attachedHere('snapshot', snapshotId)) throw this.ctx.err('BUSY', `snapshot ${snapshotId} is attached`);
        await this.removeFiles('snapshot', snapshotId);
      }),
    );
  }

  /**
   * Snapshots of a volume, oldest first. `NOT_FOUND` for an unknown volume; a volume whose own
   * sidecar is damaged lists its snapshots too. A snapshot whose sidecar is damaged is left out
   * (there is no record to show; deleteVolume names those whose bytes name the volume) and stops
   * no listing. Also finishes the
   * snapshot deletions killed midway (finishDeletions, deletion.ts; best effort), among the names
   * of the same one read of `snapshots/` that lists them (one whose deletion began has no
   * `<id>.json`: it is never listed).
   */
  async listSnapshots(volumeId: string): Promise<Snapshot[]> {
    return this.guard('listSnapshots', async () => {
      await this.ctx.store.volumeOrDamaged(volumeId);
      const names = await this.ctx.store.names('snapshot');
      this.remember('snapshot', await finishDeletions(this.ctx.store.layout, 'snapshot', this.name, names));
      return (await this.ctx.store.snapshotListing(names)).records.filter((s) => s.volumeId === volumeId).map(toSnapshot);
    });
  }

  /**
   * Opens the image with a flock: exclusive for `rw`, shared for `ro`. A volume has one `rw`
   * attachment or any number of `ro` ones, here and across instances and processes: `BUSY` when
   * the attach conflicts with one of this instance (assertNoConflict) or with another's lock, and
   * nothing is changed then. Snapshots attach `ro` only (`INVALID_INPUT` for `rw`) and never
   * conflict with their volume. `NOT_FOUND` if unknown. A `rw` attach also holds the volume's
   * writer lock (writer-lock.ts), which status probes take instead of the image's lock, so that
   * polling `getVolume`/`listVolumes` never makes an attach fail.
   */
  async attach(target: AttachTarget, mode: AttachMode): Promise<Attachment> {
    return this.guard('attach', async () => {
      if (mode !== 'ro' && mode !== 'rw') throw this.ctx.err('INVALID_INPUT', `unknown attach mode ${String(mode)}`);
      if (target?.kind !== 'volume' && target?.kind !== 'snapshot') throw this.ctx.err('INVALID_INPUT', `unknown attach target ${JSON.stringify(target)}`);
      const { kind, id } = target;
      return this.ctx.targets.run(`${kind}:${id}`, async () => {
        const record = kind === 'volume' ? await this.ctx.store.volume(id) : await this.ctx.store.snapshot(id);
        if (kind === 'snapshot' && mode === 'rw') throw this.ctx.err('INVALID_INPUT', `snapshot ${id} can only be attached read-only`);
        if (kind === 'volume') this.assertNoConflict(id, mode);
        const image = this.ctx.store.layout.image(kind, id);
        const releaseImage = await this.ctx.locks.hold(image, mode === 'rw' ? 'exclusive' : 'shared');
        let releaseWriter: (() => Promise<void>) | undefined;
        // The writer lock goes first: it must outlive the writer mark, which only the image lock
        // allows to be written.
        const release = async () => {
          try {
            await releaseWriter?.();
          } finally {
            await releaseImage();
          }
        };
        try {
          if (mode === 'rw') releaseWriter = await holdWriterLock(this.ctx.store.layout.writerLock(id), this.name);
          return await this.openDevice(kind, record, mode, release);
        } catch (err) {
          await release();
          throw err;
        }
      });
    });
  }

  /** Flushes a read-write device, saves its bitmaps and drops its lock. Idempotent: unknown ids succeed. */
  async detach(attachmentId: string): Promise<void> {
    return this.guard('detach', async () => {
      await this.attachments.get(attachmentId)?.device.close();
    });
  }

  /** Called holding the image lock; opens the device and registers the attachment. */
  private async openDevice(kind: RecordKind, record: VolumeRecord | SnapshotRecord, mode: AttachMode, release: () => Promise<void>): Promise<Attachment> {
    const { ctx } = this;
    const image = ctx.store.layout.image(kind, record.id);
    let size = record.size;
    if (kind === 'volume') ({ size } = await ctx.recovered(record.id));
    const actual = (await stat(image)).size;
    if (actual > size || (actual < size && kind === 'snapshot')) throw ctx.err('CORRUPT', `image ${image} has ${actual} bytes, its sidecar says ${size}`);
    if (actual < size) await this.heal(record.id, image);
    let tracker: ChangeTracker | undefined;
    if (mode === 'rw') {
      const t = new ChangeTracker(
        this.name,
        (cp) => ctx.store.layout.bitmap('volume', record.id, cp),
        () => ctx.makeCbtDir('volume', record.id),
        (fn) => ctx.store.exclusively(async () => fn(new Set((await ctx.store.volume(record.id)).checkpoints.map((c) => c.id)))),
      );
      await ctx.store.updateVolume(record.id, async (r) => {
        for (const c of r.checkpoints.filter((x) => x.consistent)) {
          const bitmap = await ctx.loadBitmap('volume', r.id, c.id, r.size);
          if (bitmap) t.add(c.id, bitmap);
          else c.consistent = false;
        }
        r.writer = { pid: process.pid, hostname: hostname(), since: nowIso() };
      });
      ctx.trackers.set(record.id, (tracker = t));
    }
    const fh = await open(image, mode === 'rw' ? 'r+' : 'r').catch(async (err: unknown) => {
      if (tracker) await this.endWriter(record.id, false);
      throw err;
    });
    const id = newId();
    const target: AttachTarget = { kind, id: record.id };
    const device = new FileBlockDevice(this.name, target, fh, image, size, mode, {
      tracker,
      changedSince: (cp) => this.changedBlockTracking.changedSince(kind, record.id, cp),
      closed: async (clean) => {
        this.attachments.delete(id);
        try {
          if (tracker) await ctx.targets.run(`volume:${record.id}`, () => this.endWriter(record.id, clean));
        } finally {
          await release();
        }
      },
    });
    const attachment: Attachment = { id, target, mode, device };
    this.attachments.set(id, attachment);
    return attachment;
  }

  /**
   * Grows the image of a volume to its sidecar's size: an extend interrupted between sidecar and
   * truncate (its bitmaps already mark the tail). Called holding an image lock, which may be
   * shared: another process (or instance) may heal the same image at once, or look at it (attach,
   * snapshot). So the growth is made holding the metadata lock, which every heal takes too: the
   * sidecar and the image are read again under it, nothing is done when the image already has the
   * sidecar's size (healed meanwhile), the sidecar's stamp as it is then is the reference, and the
   * grown image's stamp is saved before the lock is let go (OwnImageChange): another process's
   * heal is never taken for a write from outside, one from outside since that stamp still is. The
   * settled stamp is taken after, outside the metadata lock. Throws what the resize
   * (`UNAVAILABLE`, `INVALID_INPUT`), stat(2) and the sidecar write throw; a failed resize leaves
   * the sidecar as it was.
   */
  private async heal(volumeId: string, image: string): Promise<void> {
    const { ctx } = this;
    const own = await ctx.store.exclusively(async () => {
      const r = await ctx.store.volume(volumeId);
      if ((await stat(image)).size >= r.size) return undefined;
      const change = await OwnImageChange.begin(ctx, volumeId, r.imageStamp);
      await namingFullDisk(image, 'growing image', this.name, () => resizeImage(image, r.size, this.name));
      await change.edit(r);
      await ctx.store.put(r);
      return change;
    });
    await own?.record();
  }

  /**
   * Ends a read-write session, after its descriptors are closed: the writer mark is cleared, and
   * the image stamped, only when the bitmaps were saved.
   */
  private async endWriter(volumeId: string, clean: boolean): Promise<void> {
    this.ctx.trackers.delete(volumeId);
    if (clean) {
      // The image as this session left it, closed; stamped before the metadata lock is taken, as
      // settling may wait for the file system's clock (the image lock keeps other writers of ours off).
      const stamp = await this.ctx.imageStamp(volumeId);
      await this.ctx.store.updateVolume(volumeId, (r) => {
        r.writer = null;
        r.imageStamp = stamp;
      });
    }
  }

  /**
   * Deletes a volume or snapshot holding an exclusive lock on its image; `check` runs first under
   * that lock and may refuse by throwing. Its sidecar is renamed `<id>.deleting` (the record is
   * gone at that instant), then its image, bitmaps (and a volume's writer lock), the temp files
   * of its sidecar writes killed midway, then that sidecar (deletion.ts: a deletion killed midway is finished by the next listing, or by a
   * retried delete).
   */
  private async removeFiles(kind: RecordKind, id: string, check?: () => Promise<void>): Promise<void> {
    const { layout } = this.ctx.store;
    await this.ctx.locks.during(layout.image(kind, id), 'exclusive', async () => {
      await check?.();
      await markDeleting(this.ctx.store, kind, id);
      await removeRecordFiles(layout, kind, id);
    });
  }

  /**
   * The lookup of a delete: resolves to true when `kind` `id` exists (`lookup` resolved) and is to
   * be deleted. When `lookup` fails with `NOT_FOUND` and a deletion of that id was killed midway
   * (its `<id>.deleting` sidecar left), that deletion is finished here and this resolves to false:
   * the retried delete succeeds, as the operator who retries it expects, instead of `NOT_FOUND`.
   * So does the first delete of it after this instance's listing finished that deletion
   * (finishedDeletions: a listing ran first, as the CLI's resolve and core's recovery do before
   * the delete); a delete after that is `NOT_FOUND`, as once the retry finished it. `BUSY` when the image's lock
   * is held elsewhere (that deletion is still under way in another process or instance).
   * Otherwise `lookup`'s error: a deletion another instance finished, or one finished before this
   * instance began, leaves nothing to tell that id from one never known.
   */
  private async retryKilledDeletion(kind: RecordKind, lookup: () => Promise<unknown>, id: string): Promise<boolean> {
    try {
      await lookup();
      return true;
    } catch (err) {
      if (!hasCode(err, 'NOT_FOUND')) throw err;
      const outcome = await finishDeletion(this.ctx.store.layout, kind, id, this.name);
      if (outcome === 'busy') throw this.ctx.err('BUSY', `the deletion of ${kind} ${id} is under way elsewhere (another process or driver instance)`);
      if (outcome === 'none' && !this.finishedDeletions.delete(`${kind}:${id}`)) throw err;
      return false;
    }
  }

  /** Records `ids` of `kind` as deletions killed midway that this instance's listing finished (finishedDeletions). */
  private remember(kind: RecordKind, ids: readonly string[]): void {
    for (const id of ids) this.finishedDeletions.add(`${kind}:${id}`);
  }

  /**
   * Readers–writer within this instance, checked before any lock is taken, so a refused attach
   * changes nothing. The image locks cannot tell: this instance holds one lock per image for all
   * its attachments (an exclusive hold next to its own shared one is an upgrade, not a conflict).
   * Between instances and processes the locks themselves conflict. A read-write session counts
   * until its detach has saved the bitmaps (the tracker is gone).
   */
  private assertNoConflict(volumeId: string, mode: AttachMode): void {
    const held = [...this.attachments.values()].filter((a) => a.target.kind === 'volume' && a.target.id === volumeId).map((a) => a.mode);
    if (this.ctx.trackers.has(volumeId)) held.push('rw'); // a writer of this instance, registered or not yet (its tracker lives from open to the end of its detach)
    const conflict = attachConflict(volumeId, mode, held);
    if (conflict) throw this.ctx.err('BUSY', conflict);
  }

  private attachedHere(kind: RecordKind, id: string): boolean {
    return [...this.attachments.values()].some((a) => a.target.kind === kind && a.target.id === id);
  }

  /**
   * `in-use` while attached read-write here, or while another live process (or instance) holds it
   * read-write: its sidecar carries a writer mark and the writer lock is held. A mark without the
   * lock is a writer that is gone (the next attach recovers). Takes no lock on the image, so a
   * status query never makes an attach, extend, snapshot or delete fail with `BUSY`.
   */
  private async statusOf(r: VolumeRecord): Promise<Volume['status']> {
    if (this.ctx.trackers.has(r.id)) return 'in-use';
    if (!r.writer) return 'available';
    return (await writerAlive(this.ctx.store.layout.writerLock(r.id), this.name)) ? 'in-use' : 'available';
  }

  private async guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toCairnError(err, this.name, what);
    }
  }
}
