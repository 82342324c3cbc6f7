import { attachConflict, CairnError, isCairnError, newId, type AttachMode, type AttachTarget, type Attachment, type ByteRange, type Extent } from '@cairn/core';
import { queryChangedExtents } from './bitmap-query.js';
import type { DaemonSession } from './daemon-session.js';
import type { FleecingView } from './fleecing-view.js';
import type { OtherInstances } from './other-instances.js';
import { Qcow2BlockDevice, type ChangedSource } from './qcow2-block-device.js';
import type { RecordStore } from './record-store.js';
import { bitmapChain, type SnapshotRecord } from './records.js';
import type { Runtime } from './runtime.js';
import { checkCopyStamp, copyStampHolds, imageStampNow } from './volume-stamp.js';

interface Entry {
  attachment: Attachment;
  device: Qcow2BlockDevice;
  session: DaemonSession;
  exportId: string;
  /** The volume this attachment belongs to (its lock serializes attach, detach and deletes). */
  volumeId: string;
  /** Drops the node reference taken at attach. */
  release: () => Promise<void>;
}

/**
 * The driver's attachments: each one is its own NBD export (a fresh name) of the right node and
 * one NbdClient connected to it. attach = open node (blockdev-add when not yet open) +
 * block-export-add + connect; detach = flush (rw) + disconnect + block-export-del (waiting for
 * BLOCK_EXPORT_DELETED) + close the node when nothing else uses it.
 */
export class AttachmentTable {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly driver: string,
    private readonly store: RecordStore,
    private readonly runtime: Runtime,
    private readonly views: ReadonlyMap<string, FleecingView>,
    private readonly others: OtherInstances,
  ) {}

  hasWriter(volumeId: string): boolean {
    return [...this.entries.values()].some((e) => e.attachment.mode === 'rw' && e.attachment.target.kind === 'volume' && e.attachment.target.id === volumeId);
  }

  usesVolume(volumeId: string): boolean {
    return [...this.entries.values()].some((e) => e.attachment.target.kind === 'volume' && e.attachment.target.id === volumeId);
  }

  usesSnapshot(snapshotId: string): boolean {
    return [...this.entries.values()].some((e) => e.attachment.target.kind === 'snapshot' && e.attachment.target.id === snapshotId);
  }

  async attach(target: AttachTarget, mode: AttachMode): Promise<Attachment> {
    if (mode !== 'ro' && mode !== 'rw') throw this.err('INVALID_INPUT', `unknown attach mode ${String(mode)}`);
    if (target?.kind === 'volume') return this.attachVolume(target.id, mode);
    if (target?.kind === 'snapshot') {
      if (mode === 'rw') throw this.err('INVALID_INPUT', `snapshot ${target.id} can only be attached read-only`);
      const view = this.views.get(target.id);
      if (view) return this.runtime.locks.run(view.info.volumeId, () => this.attachView(view));
      const { volumeId } = await this.store.snapshot(target.id);
      return this.runtime.locks.run(volumeId, () => this.attachCopy(target.id));
    }
    throw this.err('INVALID_INPUT', `unknown attach target ${JSON.stringify(target)}`);
  }

  private async attachVolume(volumeId: string, mode: AttachMode): Promise<Attachment> {
    return this.runtime.locks.run(volumeId, async () => {
      await this.store.volume(volumeId);
      this.assertNoConflict(volumeId, mode);
      const { session, node } = await this.runtime.openVolume(volumeId);
      const release = await this.markWriter(volumeId, mode, () => this.runtime.releaseVolume(session, volumeId));
      // Under the volume's lock: the sidecar's chain and the node's bitmaps then agree (a checkpoint
      // call changes the bitmaps, then the sidecar, inside the lock). Nothing calls this with the lock held.
      const changed: ChangedSource = (since, range) =>
        this.runtime.locks.run(volumeId, async () => {
          const chain = bitmapChain((await this.store.volume(volumeId)).checkpoints, since);
          if (!chain || session.isUnsettled(node)) throw this.notFound(since);
          return queryChangedExtents(session, { bitmapNode: node, exportNode: node, sources: chain, range, driver: this.driver });
        });
      return this.open({ kind: 'volume', id: volumeId }, mode, session, session.filters.top(node), release, changed, volumeId);
    });
  }

  /**
   * Sets the volume's writer mark for a `rw` attachment, which other instances read for its status
   * (see OtherInstances), or removes a stale one for a `ro` attachment: this daemon holds the image
   * now, so no mark there can be another writer's. Returns the attachment's release: for `rw` it
   * clears the mark before the node is let go (a mark whose clear failed is stale once the image
   * is released, and counts for nothing). On failure releases the node and throws.
   */
  private async markWriter(volumeId: string, mode: AttachMode, releaseNode: () => Promise<void>): Promise<() => Promise<void>> {
    try {
      if (mode === 'rw') await this.others.markWriter(volumeId);
      else await this.others.clearMark(volumeId);
    } catch (err) {
      await releaseNode().catch(() => {});
      throw err;
    }
    if (mode === 'ro') return releaseNode;
    return async () => {
      await this.others.clearMark(volumeId).catch(() => {});
      await releaseNode();
    };
  }

  /**
   * One read-write attachment or any number of read-only ones per volume, checked before the node
   * is opened or exported, so a refused attach changes nothing (`BUSY`). qemu would not refuse
   * within the daemon: every attachment of a volume exports the same writable node. Between
   * driver instances qemu's image locks refuse any second open (the node is always writable).
   * Callers hold the volume's lock, which detach also takes.
   */
  private assertNoConflict(volumeId: string, mode: AttachMode): void {
    const held = [...this.entries.values()].filter((e) => e.attachment.target.kind === 'volume' && e.attachment.target.id === volumeId).map((e) => e.attachment.mode);
    const conflict = attachConflict(volumeId, mode, held);
    if (conflict) throw this.err('BUSY', conflict);
  }

  private async attachView(view: FleecingView): Promise<Attachment> {
    if (this.views.get(view.info.id) !== view) throw this.err('NOT_FOUND', `snapshot ${view.info.id} not found`);
    const changed = async (since: string, range: ByteRange): Promise<Extent[]> => {
      const frozen = view.frozen.get(since);
      if (!frozen) throw this.notFound(since);
      return queryChangedExtents(view.session, { bitmapNode: view.node, exportNode: view.overlay, sources: [frozen], range, driver: this.driver });
    };
    return this.open({ kind: 'snapshot', id: view.info.id }, 'ro', view.session, view.overlay, async () => {}, changed, view.info.volumeId);
  }

  /**
   * A snapshot copy, opened read-only. Its stamp (volume-stamp.ts) is taken before the open and
   * compared once the daemon has the copy open (checkCopyStamp: a copy written outside the driver
   * has every checkpoint made not consistent, for good; when that check fails the attach fails);
   * each "changed since" query compares it again (copyStampHolds), so a write made while attached
   * is `NOT_FOUND` as well. Callers hold the lock of the copy's volume.
   */
  private async attachCopy(snapshotId: string): Promise<Attachment> {
    const { volumeId } = await this.store.snapshot(snapshotId);
    const session = await this.runtime.session();
    const path = this.store.layout.image('snapshot', snapshotId);
    const before = await imageStampNow(this.store, 'snapshot', snapshotId);
    const { name: node } = await session.openNode(path, true);
    const release = (): Promise<void> => session.releaseNode(path, volumeId);
    let record: SnapshotRecord;
    try {
      await checkCopyStamp(this.store, snapshotId, before);
      record = await this.store.snapshot(snapshotId);
    } catch (err) {
      await release().catch(() => {}); // a failed close stays queued (releaseNode)
      throw err;
    }
    const changed = async (since: string, range: ByteRange): Promise<Extent[]> => {
      const chain = bitmapChain(record.checkpoints, since);
      if (!chain || !(await copyStampHolds(record.imageStamp, path))) throw this.notFound(since);
      return queryChangedExtents(session, { bitmapNode: node, exportNode: node, sources: chain, range, driver: this.driver });
    };
    return this.open({ kind: 'snapshot', id: snapshotId }, 'ro', session, node, release, changed, volumeId);
  }

  /** Exports `node`, connects, and records the attachment; on failure releases what it took. */
  private async open(
    target: AttachTarget,
    mode: AttachMode,
    session: DaemonSession,
    node: string,
    release: () => Promise<void>,
    changed: ChangedSource,
    volumeId: string,
  ): Promise<Attachment> {
    let exportId: string | undefined;
    try {
      exportId = await session.addExport(node, mode === 'rw');
      const client = await session.connectNbd(exportId);
      const device = new Qcow2BlockDevice(client, mode, this.driver, changed);
      const attachment: Attachment = { id: newId(), target: { ...target }, mode, device };
      this.entries.set(attachment.id, { attachment, device, session, exportId, volumeId, release });
      return attachment;
    } catch (err) {
      if (exportId) await session.deleteExport(exportId).catch(() => {});
      await release().catch(() => {});
      throw err;
    }
  }

  /**
   * Idempotent: an unknown attachment id succeeds. Every step waits at most the session's
   * timeout, the flush its I/O timeout. A daemon that does not answer in time (stalled, not dead)
   * is stopped (`quit`, SIGTERM, SIGKILL; its other attachments and views go with it) and detach
   * fails with UNAVAILABLE: writes not flushed may be lost. A daemon that died is not an error.
   * A daemon that SIGKILL did not end either (stuck in uninterruptible I/O; DaemonSession.leftBehind)
   * is: detach fails UNAVAILABLE with its `details.leftBehind`, `pid`, `processState` and detach's
   * own failure as `cause`, after at most the stop's bounded waits; so does the detach of any other
   * attachment of that daemon until it exits. The attachment is forgotten all the same.
   * A device whose connection is already lost (its requests got nothing from the daemon within
   * the I/O timeout) cannot be flushed or disconnected: detach goes on with the export and the
   * node, whose QMP commands tell whether the daemon still stalls. Any other failure before the
   * node's release while the daemon runs (an NBD error reply to the flush, a refused export
   * deletion) fails detach and keeps the attachment: what was not torn down yet stays in place
   * and a later detach (or `close()`) goes on from there. A release that fails is queued (releaseNode).
   */
  async detach(attachmentId: string): Promise<void> {
    const entry = this.entries.get(attachmentId);
    if (!entry) return;
    await this.runtime.locks.run(entry.volumeId, async () => {
      if (!this.entries.delete(attachmentId)) return;
      const { session, device } = entry;
      let releasing = false; // a release that fails stays queued on the node (releaseNode): nothing to retry here
      try {
        try {
          // A flush writes back what the image has cached, which can take long on slow storage:
          // it gets the I/O timeout (5 minutes by default) before the daemon is taken for
          // stalled and stopped, which may lose what it had not flushed.
          if (entry.attachment.mode === 'rw' && !device.isClosed) await session.within('flush', device.flush(), session.ioTimeoutMs);
          await session.within('disconnect', device.close());
        } catch (err) {
          if (!connectionLost(err)) throw err;
          await device.close().catch(() => {});
        }
        await session.deleteExport(entry.exportId);
        releasing = true;
        await entry.release();
      } catch (err) {
        const stalled = isTimeout(err);
        // After the daemon died there is nothing left to flush or release: detach succeeds.
        if (!stalled && (err as CairnError).code === 'UNAVAILABLE') await session.exitedWithin(1000);
        if (stalled && session.alive) {
          await session.abandon().catch(() => undefined); // a daemon left behind: session.leftBehind, below
          if (!session.leftBehind) {
            throw new CairnError('UNAVAILABLE', `detach ${attachmentId}: qemu-storage-daemon stopped answering, so it was stopped; writes not yet flushed may be lost`, {
              driver: this.driver,
              cause: err,
            });
          }
        }
        const stuck = session.leftBehind;
        if (stuck) throw this.leftBehind(attachmentId, stuck, err);
        if (session.alive) {
          // A refusal or error reply before the release (e.g. the flush's EIO or ENOSPC) from a
          // daemon that still runs: the attachment stays, so its export and node stay accounted
          // for (a second rw attach is BUSY) and a retried detach takes up the steps again (each
          // is safe to repeat).
          if (!releasing) this.entries.set(attachmentId, entry);
          throw err;
        }
        await device.close().catch(() => {});
      }
      // Steps that skip a daemon which is not alive "succeed" on a stuck one too: it still holds the image.
      const stuck = session.leftBehind;
      if (stuck) throw this.leftBehind(attachmentId, stuck, undefined);
    });
  }

  /**
   * The error of a detach whose daemon, SIGKILLed, did not exit (DaemonSession.leftBehind): the
   * image stays open and locked in it, so the volume is not free. `cause` is detach's own failure.
   */
  private leftBehind(attachmentId: string, stuck: CairnError, cause: unknown): CairnError {
    const message = `detach ${attachmentId}: qemu-storage-daemon stopped answering and could not be stopped (${stuck.message.replace(/^\[[^\]]*\] /, '')}); until it exits it keeps the image open and locked (attaching it again is BUSY) and writes not yet flushed may be lost`;
    return new CairnError('UNAVAILABLE', message, { driver: this.driver, cause: cause ?? stuck, details: { ...stuck.details } });
  }

  async detachAll(): Promise<void> {
    for (const id of [...this.entries.keys()]) await this.detach(id).catch(() => {});
  }

  /** The daemon died: forget its attachments (their devices fail with UNAVAILABLE from now on: BaseBlockDevice.lose). */
  dropSession(session: DaemonSession): void {
    for (const [id, e] of this.entries) {
      if (e.session !== session) continue;
      this.entries.delete(id);
      const reason = this.err('UNAVAILABLE', `attachment ${id} is gone: the qemu-storage-daemon serving it died (nothing more is read or written through it; attach again)`);
      void e.device.lose(reason).catch(() => {});
    }
  }

  private notFound(since: string): CairnError {
    return new CairnError('NOT_FOUND', `checkpoint ${JSON.stringify(since)} is unknown or its dirty bitmaps cannot be trusted (read everything)`, { driver: this.driver });
  }

  private err(code: CairnError['code'], message: string): CairnError {
    return new CairnError(code, message, { driver: this.driver });
  }
}

/** A request the daemon did not answer in time (QMP, or an NBD step of detach): it may be stalled rather than dead. */
function isTimeout(err: unknown): boolean {
  return isCairnError(err) && err.code === 'UNAVAILABLE' && typeof err.details?.timeoutMs === 'number';
}

/**
 * The NBD connection is gone (the I/O timeout passed without an answer, or the daemon closed it):
 * `UNAVAILABLE` without `details`. An NBD error reply (`details.nbdError`, e.g. EIO or ENOSPC from
 * a flush) and a timeout of detach's own (`details.timeoutMs`) are not.
 */
function connectionLost(err: unknown): boolean {
  return isCairnError(err) && err.code === 'UNAVAILABLE' && err.details?.nbdError === undefined && err.details?.timeoutMs === undefined;
}
