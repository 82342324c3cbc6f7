import { join } from 'node:path';
import { CairnError, KeyedMutex, isCairnError, toCairnError } from '@cairn/core';
import { NbdClient } from '@cairn/nbd';
import { onDeadline, QemuStorageDaemon, type BlockDirtyInfo, type QmpClient } from '@cairn/qmp';
import { DeferredWork } from './deferred-work.js';
import { FilterStack } from './filter-stack.js';
import { assertTrustedHeader } from './image-header.js';
import { imageOpenError } from './image-lock.js';
import { outcomeUnknown } from './outcome.js';
import type { QemuImg } from './qemu-img.js';

/**
 * NBD requests (read, write, flush, block status) get this many command timeouts before the
 * daemon counts as stalled (5 minutes by default): a flush or a write on slow storage is not a
 * stall. One bound for every request, because a connection has one request timeout.
 */
const IO_TIMEOUT_FACTOR = 10;

export interface SessionOptions {
  /** Program to run. */
  binary: string;
  /** Parent of the daemon's temp dir (QMP and NBD sockets). */
  runtimeDir: string;
  driver: string;
  /** How long one QMP command may take before it fails with UNAVAILABLE (its outcome then unknown). */
  commandTimeoutMs: number;
  /**
   * How long `stop()` gives the daemon to quit cleanly (the `quit` reply and the exit: qemu
   * closes its nodes and writes their persistent bitmaps) before SIGTERM, then SIGKILL. Not tied
   * to `commandTimeoutMs`: a small command timeout must not kill a slow quit. From 1 to 2^31 - 1.
   */
  stopTimeoutMs: number;
  /** Checks every image before it is opened (QemuImg.assertWhole). */
  qemuImg: QemuImg;
  /**
   * Called after the daemon closed a writable node (`blockdev-del` answered: qemu has written its
   * bitmaps and let go of the file), with the image's path and the session, whose daemon still
   * runs; not when the daemon died or quit. Callers hold the volume's lock. Must not throw.
   */
  onNodeClosed?: (path: string, session: DaemonSession) => Promise<void>;
}

interface OpenNode {
  name: string;
  /** References taken by openNode and not yet released; 0 while a failed close is queued. */
  refs: number;
  readOnly: boolean;
}

/**
 * One running qemu-storage-daemon: its QMP client, the NBD server on a unix socket in the
 * daemon's temp dir, the format nodes it has open (one per image, reference-counted), the
 * filters views put above them, and the work deferred on them. Names (nodes, filters, exports)
 * are unique within a session only: the next session's counter starts again, so nothing of one
 * session may be looked up in another. A session never restarts: once the daemon has exited,
 * `alive` is false and every call fails with `UNAVAILABLE`; the driver starts a new session.
 */
export class DaemonSession {
  private readonly nodes = new Map<string, OpenNode>();
  private readonly nodeLocks = new KeyedMutex();
  private readonly unsettledNodes = new Set<string>();
  private readonly removals = new Map<string, Set<string>>();
  /** The copy-before-write filters of this session's nodes (the top is where a volume's exports go). */
  readonly filters = new FilterStack();
  /** Cleanup of nodes that did not finish, retried until it does (see DeferredWork). */
  readonly deferred: DeferredWork;
  private counter = 0;
  private stopping = false;
  /** The `left behind` error of the last stop that found the daemon stuck after its SIGKILL (see leftBehind). */
  private stuck: CairnError | undefined;

  private constructor(
    readonly daemon: QemuStorageDaemon,
    /** The NBD server's unix socket. */
    readonly nbdSocket: string,
    private readonly driver: string,
    /** How long the daemon may take to answer one QMP command or event, and an NBD connect or disconnect. */
    readonly timeoutMs: number,
    private readonly qemuImg: QemuImg,
    private readonly onNodeClosed: (path: string, session: DaemonSession) => Promise<void>,
    /** The budget of a requested stop (SessionOptions.stopTimeoutMs). */
    private readonly stopTimeoutMs: number,
  ) {
    this.deferred = new DeferredWork(driver);
  }

  /** Starts the daemon and its NBD server. `UNAVAILABLE` when the daemon cannot run. */
  static async start(options: SessionOptions): Promise<DaemonSession> {
    const daemon = await QemuStorageDaemon.start({
      binary: options.binary,
      tmpParent: options.runtimeDir,
      driver: options.driver,
      commandTimeoutMs: options.commandTimeoutMs,
    });
    const nbdSocket = join(daemon.dir, 'nbd.sock');
    try {
      await daemon.qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbdSocket } } });
    } catch (err) {
      // The start's own error is what the caller needs. A daemon the kill leaves behind (stuck in
      // uninterruptible I/O) has opened no image yet, so it holds nothing a later start needs.
      await daemon.kill().catch(() => undefined);
      throw err;
    }
    return new DaemonSession(daemon, nbdSocket, options.driver, options.commandTimeoutMs, options.qemuImg, options.onNodeClosed ?? (async () => {}), options.stopTimeoutMs);
  }

  /** The I/O timeout: how long NBD requests may wait for the daemon (IO_TIMEOUT_FACTOR command timeouts). */
  get ioTimeoutMs(): number {
    return this.timeoutMs * IO_TIMEOUT_FACTOR;
  }

  /**
   * Connects an NBD client to one of this daemon's exports. Every step is bounded: connect and
   * handshake, and the disconnect, by the command timeout; requests by `ioTimeoutMs` (the
   * client's `requestTimeoutMs`): when the daemon sends nothing that long while requests are
   * pending, they fail with UNAVAILABLE and the connection is closed, so every later request on
   * it fails with UNAVAILABLE too. The daemon itself is left alone (see AttachmentTable.detach).
   */
  connectNbd(exportName: string, metaContexts?: string[]): Promise<NbdClient> {
    return NbdClient.connect({
      path: this.nbdSocket,
      exportName,
      ...(metaContexts ? { metaContexts } : {}),
      driver: this.driver,
      connectTimeoutMs: this.timeoutMs,
      requestTimeoutMs: this.ioTimeoutMs,
      disconnectTimeoutMs: this.timeoutMs,
    });
  }

  get qmp(): QmpClient {
    return this.daemon.qmp;
  }

  get alive(): boolean {
    return !this.daemon.exit && !this.qmp.closed;
  }

  /**
   * Waits up to `ms` for the daemon to exit; true if it has. An exit received by the deadline
   * counts (onDeadline), also when its temp dir is still being removed.
   */
  async exitedWithin(ms: number): Promise<boolean> {
    let cancel = (): void => {};
    const exited = await Promise.race([
      this.daemon.whenExited.then(() => true),
      new Promise<boolean>((resolve) => (cancel = onDeadline(ms, () => resolve(this.daemon.exit !== undefined)))),
    ]);
    cancel();
    return exited;
  }

  /** True once `stop()` was called (an exit after that is not a crash). */
  get stopRequested(): boolean {
    return this.stopping;
  }

  /** A fresh name, unique in this daemon (node names are at most 31 characters). */
  nextName(prefix: string): string {
    return `${prefix}${++this.counter}`;
  }

  /**
   * The node of an open image, if any. A node whose close failed counts as open until the close
   * succeeds: qemu may still hold it, and the image's lock with it.
   */
  nodeOf(path: string): string | undefined {
    return this.nodes.get(path)?.name;
  }

  /**
   * Opens `path` as a qcow2 node (or takes another reference to it). `fresh` is true when this
   * call opened it. Writable nodes discard and detect zeroes (`unmap`) so zero writes stay sparse.
   * A node whose close failed and is queued (releaseNode) is closed first, and the call fails with
   * that close's error while it fails. `BUSY` when another process holds the image's lock
   * (qemu's lock failure only: see image-lock.ts). `CORRUPT` for a damaged image, for one qemu
   * marked corrupt (also read-only, which qemu would allow), and for one that names a backing
   * file or an external data file (assertTrustedHeader): no such file is ever opened. `CORRUPT`
   * too for an image qemu-img check finds damaged, above all one cut short, whose lost clusters
   * qemu would serve as zeros (QemuImg.assertWhole, before the open: it takes the image's lock
   * while it runs, `BUSY` when another process holds it). `NOT_SUPPORTED` for an image the driver
   * cannot serve: an encrypted one (assertTrustedHeader; a qcow2 version 2 image opens, without
   * bitmaps). On failure no node is left: when the
   * add got no reply (qemu may still run it), a delete of the same node name is sent after it.
   */
  async openNode(path: string, readOnly: boolean): Promise<{ name: string; fresh: boolean }> {
    return this.nodeLocks.run(path, () => this.doOpenNode(path, readOnly));
  }

  private async doOpenNode(path: string, readOnly: boolean): Promise<{ name: string; fresh: boolean }> {
    const closing = this.nodes.get(path);
    if (closing?.refs === 0) {
      await this.deferred.run(closing.name); // the queued close (no work that takes a reference can be queued now)
      if (this.nodes.get(path) === closing) await this.closeNode(path, closing);
    }
    const open = this.nodes.get(path);
    if (open) {
      open.refs++;
      return { name: open.name, fresh: false };
    }
    // An image naming another file (a backing or external data file), or marked corrupt, is never
    // opened (CORRUPT), and `backing: null` keeps qemu from opening a backing file a header names meanwhile.
    await assertTrustedHeader(path, this.driver);
    // A truncated image opens and reads zeros where its data was: refused before qemu opens it.
    await this.qemuImg.assertWhole(path);
    const name = this.nextName(readOnly ? 'ro' : 'rw');
    try {
      await this.qmp.execute('blockdev-add', {
        driver: 'qcow2',
        'node-name': name,
        'read-only': readOnly,
        backing: null,
        ...(readOnly ? {} : { discard: 'unmap', 'detect-zeroes': 'unmap' }),
        file: { driver: 'file', filename: path, 'read-only': readOnly },
      });
    } catch (err) {
      // No reply in time: qemu may still open the node (and lock the image) with nobody knowing
      // it. A delete of the same name is sent after the add, so qemu runs it after.
      if (outcomeUnknown(err)) await this.qmp.execute('blockdev-del', { 'node-name': name }).catch(() => {});
      throw imageOpenError(toCairnError(err, this.driver, `open ${path}`), path, this.driver);
    }
    this.nodes.set(path, { name, refs: 1, readOnly });
    return { name, fresh: true };
  }

  /**
   * Drops a reference; the last one closes the node (`blockdev-del`, which writes its persistent
   * bitmaps). When the close fails — no reply in time (qemu may still run it), or a refusal (the
   * node is still in use) — the node stays known as open (nodeOf, isOpen: qemu may still hold it
   * and the image's lock) and the close is queued on it (DeferredWork, under `volumeId`'s lock),
   * retried until it succeeds; the error is thrown. Callers hold the volume's lock (`volumeId`:
   * the volume of the image, or of the snapshot copy). Idempotent per reference.
   */
  async releaseNode(path: string, volumeId: string): Promise<void> {
    return this.nodeLocks.run(path, () => this.doReleaseNode(path, volumeId));
  }

  private async doReleaseNode(path: string, volumeId: string): Promise<void> {
    const open = this.nodes.get(path);
    if (!open || open.refs === 0) return; // refs 0: its close is queued already
    if (--open.refs > 0) return;
    await this.deferred.attempt(open.name, volumeId, () => this.closeNode(path, open));
  }

  /**
   * Closes a node nobody references: `blockdev-del` ("no such node" counts as done; nothing to do
   * after the daemon died), then forgets it with its marks, filters and queued work. Any other
   * failure is thrown and the node stays known. Idempotent.
   */
  private async closeNode(path: string, open: OpenNode): Promise<void> {
    if (this.nodes.get(path) !== open) return;
    const closed = this.alive;
    if (closed) {
      try {
        await this.qmp.execute('blockdev-del', { 'node-name': open.name });
      } catch (err) {
        if ((err as CairnError).code !== 'NOT_FOUND') throw err;
      }
    }
    // Before the node is forgotten, so that whoever sees it gone sees the stamp's hold gone too.
    if (closed && !open.readOnly) await this.onNodeClosed(path, this);
    this.nodes.delete(path);
    this.unsettledNodes.delete(open.name); // a reopen gets a new name and is reconciled as fresh
    this.filters.forget(open.name);
    this.deferred.drop(open.name);
  }

  /**
   * Nodes whose persistent bitmaps may disagree with their volume's sidecar: a change of the
   * checkpoint chain failed with an unknown outcome (no reply in time: qemu may still run it
   * later). While a node is unsettled, "changed since" queries on it fail with NOT_FOUND, and
   * the next structural call on its volume reconciles it first (see settleCheckpoints).
   */
  isUnsettled(node: string): boolean {
    return this.unsettledNodes.has(node);
  }

  markUnsettled(node: string): void {
    this.unsettledNodes.add(node);
  }

  markSettled(node: string): void {
    this.unsettledNodes.delete(node);
  }

  /**
   * Checkpoints of the image at `path` whose removal transaction was sent but whose sidecar
   * update did not happen (no reply, or the sidecar write failed). If such a checkpoint's bitmap
   * is gone, the transaction ran, and being atomic it also merged the bitmap into the previous
   * checkpoint's: the reconcile drops it instead of declaring the chain lost. Kept by image path,
   * not node: the node may be closed (bitmaps written) and reopened before it is reconciled; the
   * daemon's death drops them, and what it left is then reconciled without them.
   */
  removalsOf(path: string): ReadonlySet<string> {
    return this.removals.get(path) ?? new Set();
  }

  noteRemoval(path: string, checkpointId: string): void {
    this.removals.set(path, new Set([...this.removalsOf(path), checkpointId]));
  }

  clearRemovals(path: string): void {
    this.removals.delete(path);
  }

  /** Dirty bitmaps of a node. */
  async bitmaps(node: string): Promise<BlockDirtyInfo[]> {
    const nodes = await this.qmp.execute('query-named-block-nodes', { flat: true });
    return nodes.find((n) => n['node-name'] === node)?.['dirty-bitmaps'] ?? [];
  }

  /**
   * Exports `node` over NBD under a fresh name, which is returned (also the export id). On
   * failure no export is left: when the add got no reply (qemu may still run it), a delete of the
   * same id is sent after it, which qemu runs after the add.
   */
  async addExport(node: string, writable: boolean, bitmaps: string[] = []): Promise<string> {
    const id = this.nextName('exp');
    try {
      await this.qmp.execute('block-export-add', { type: 'nbd', id, 'node-name': node, name: id, writable, ...(bitmaps.length ? { bitmaps } : {}) });
    } catch (err) {
      if (outcomeUnknown(err)) await this.deleteExport(id).catch(() => {});
      throw err;
    }
    return id;
  }

  /**
   * Removes an export (dropping any client left) and waits for BLOCK_EXPORT_DELETED, at most the
   * command timeout from the `block-export-del` reply (the command itself may wait its turn
   * behind a slow one; its own timeout bounds that). Idempotent.
   */
  async deleteExport(id: string): Promise<void> {
    if (!this.alive) return;
    const deleting = this.qmp.execute('block-export-del', { id, mode: 'hard' });
    // Registered in the same tick as the sending, so the event cannot be missed (qemu 7.2 sends it before the reply).
    const gone = this.qmp.waitForEvent('BLOCK_EXPORT_DELETED', (e) => e.data.id === id, { timeoutMs: this.timeoutMs, after: deleting });
    try {
      await deleting;
    } catch (err) {
      if ((err as CairnError).code === 'NOT_FOUND') return;
      throw err;
    }
    await gone;
  }

  /**
   * Waits for `work` (an NBD step) at most `timeoutMs` (default the session's command timeout);
   * then fails with UNAVAILABLE (`details.timeoutMs` set: the daemon is stalled, not dead).
   * `work` goes on. An answer received by the deadline wins (onDeadline): after this process's
   * event loop was held up, a reply waiting in the socket settles `work` before the deadline fires.
   */
  async within<T>(what: string, work: Promise<T>, timeoutMs = this.timeoutMs): Promise<T> {
    let cancel = (): void => {};
    const late = new Promise<never>((_, reject) => {
      cancel = onDeadline(timeoutMs, () =>
        reject(new CairnError('UNAVAILABLE', `${what}: no answer from qemu-storage-daemon within ${timeoutMs} ms`, { driver: this.driver, details: { timeoutMs } })),
      );
    });
    work.catch(() => {}); // a late failure after the deadline is nobody's
    try {
      return await Promise.race([work, late]);
    } finally {
      cancel();
    }
  }

  /**
   * While the daemon, SIGKILLed by `stop` or `abandon`, has still not exited (stuck in
   * uninterruptible I/O: a hung disk, NFS or FUSE server), the UNAVAILABLE `left behind` that
   * stop failed with (`details.leftBehind`, `pid`, `processState`); else undefined. Such a
   * daemon is not `alive` (its QMP client is closed), but it is not gone either: it keeps its
   * images open and locked (another daemon's open of them is BUSY), and I/O it had under way may
   * still reach them, until it exits. Nothing it served may be reported as released meanwhile.
   */
  get leftBehind(): CairnError | undefined {
    return this.daemon.exit ? undefined : this.stuck;
  }

  /**
   * The daemon stopped answering: stops it (`quit`, SIGTERM, SIGKILL, each wait bounded by
   * `timeoutMs`, at most 5, 3 and 5 s) as a LOST session, not a requested stop, so the driver
   * drops its attachments and views once it exits and the next call starts a new daemon.
   * UNAVAILABLE `left behind` (see leftBehind) when it has not exited after its SIGKILL; a later
   * call waits for that exit again, bounded the same way. Idempotent; while a stop or abandon is
   * under way, this waits for it (QemuStorageDaemon.stop: the first call's bounds hold).
   */
  async abandon(): Promise<void> {
    await this.stopDaemon(stopWaits(Math.min(5_000, this.timeoutMs), this.timeoutMs));
  }

  /**
   * Clean shutdown (`quit`): qemu closes every node and writes persistent bitmaps. The daemon gets
   * its own budget for that, `stopTimeoutMs` (the quit's reply and the exit), then SIGTERM and
   * SIGKILL, each wait at most 3 and 5 s and at most `stopTimeoutMs`: never the command timeout,
   * which a caller may set small for quick stall detection, and which would kill a daemon still
   * closing its images (writes and metadata caches not flushed, bitmaps left `in-use`).
   *
   * `onNodeClosed` does not run for nodes still open at the quit, and no stamp is saved for them
   * afterwards, even after a clean exit (code 0): nothing can hold their images between the exit
   * and a stamp's write (qemu's locks are the only exclusion between instances, and no hold can be
   * taken while this daemon has the image open), so another instance may open the image, find its
   * old stamp mismatched and mark its checkpoints not consistent in the sidecar, which a stamp
   * written now (a read-modify-write serialized in this process only) could overwrite with the
   * checkpoints it read before; and a write by any program that takes qemu's locks in between
   * would be absorbed (volume-stamp.ts). Their old stamps stay and no longer match: a full backup.
   * Bounded and failing as `abandon` (the nodes then stay known: the stuck daemon still holds
   * them). Idempotent.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.stopDaemon(stopWaits(this.stopTimeoutMs, this.stopTimeoutMs));
    this.nodes.clear();
  }

  private async stopDaemon(waits: StopWaits): Promise<void> {
    try {
      await this.daemon.stop(waits);
    } catch (err) {
      if (isCairnError(err) && err.details?.leftBehind === true) this.stuck = err;
      throw err;
    }
  }
}

interface StopWaits {
  quitTimeoutMs: number;
  termTimeoutMs: number;
  killTimeoutMs: number;
}

/** The waits of a stop: `quitMs` for the quit, then SIGTERM and SIGKILL, each wait at most 3 and 5 s and at most `boundMs`. */
function stopWaits(quitMs: number, boundMs: number): StopWaits {
  return { quitTimeoutMs: quitMs, termTimeoutMs: Math.min(3_000, boundMs), killTimeoutMs: Math.min(5_000, boundMs) };
}
