import { basename, dirname } from 'node:path';
import { CairnError, KeyedMutex } from '@cairn/core';
import { reconcileCheckpoints, settleCheckpoints } from './checkpoint-reconcile.js';
import { DaemonSession } from './daemon-session.js';
import { DeferredRetry } from './deferred-retry.js';
import { holdImage } from './image-hold.js';
import type { QemuImg } from './qemu-img.js';
import type { RecordStore } from './record-store.js';
import { prepareViewsDir, removeViewsDir } from './views-dir.js';
import { checkVolumeStamp, imageStampNow, saveVolumeStamp } from './volume-stamp.js';

export interface RuntimeOptions {
  driver: string;
  binary: string;
  runtimeDir: string;
  commandTimeoutMs: number;
  /** The budget of the daemon's clean quit at `close()` (SessionOptions.stopTimeoutMs). */
  stopTimeoutMs: number;
  store: RecordStore;
  /** Probes the locks of what other instances left in `views/` (prepareViewsDir). */
  qemuImg: QemuImg;
  /** Called once when a daemon exits without being asked to (crash, SIGKILL). */
  onSessionLost: (session: DaemonSession) => void;
}

/**
 * The driver's process model: at most one qemu-storage-daemon at a time, started on first need,
 * restarted on the next need after it died, stopped by `close()`. Also the per-volume lock that
 * serializes structural changes (attach, detach, snapshot, checkpoint, extend, delete). Each
 * session gets its own retry of deferred cleanup (DeferredRetry), stopped when its daemon exits.
 * What lives in qemu (nodes, filters, deferred work) is kept per session (DaemonSession).
 */
export class Runtime {
  /** Per-volume lock for structural changes. */
  readonly locks = new KeyedMutex();
  private starting: Promise<DaemonSession> | undefined;
  private closed = false;
  /** The retries of sessions whose daemon has not exited yet. */
  private readonly retries = new Set<DeferredRetry>();
  /** Sessions whose daemon has not exited: the running one, and any given up on while stuck (DaemonSession.leftBehind). */
  private readonly unexited = new Set<DaemonSession>();
  /**
   * Per session, the volume images whose stamp check failed at their fresh open (openVolume): the
   * close of that node saves no stamp (stampClosed), so the old one, which the open made stale,
   * stays and the next open sees the mismatch the failed check could not record.
   */
  private readonly unchecked = new WeakMap<DaemonSession, Set<string>>();

  constructor(private readonly options: RuntimeOptions) {}

  /**
   * The running session, starting a daemon when none runs. Calls are chained, so concurrent
   * callers share one start. `UNAVAILABLE` when it cannot start or after `close()`. A daemon
   * left behind (DaemonSession.leftBehind) does not run, so a new one starts beside it; qemu's
   * image locks keep the new one off every image the stuck one still has open (BUSY).
   */
  session(): Promise<DaemonSession> {
    if (this.closed) return Promise.reject(new CairnError('UNAVAILABLE', 'driver is closed', { driver: this.options.driver }));
    const previous = this.starting?.catch(() => undefined) ?? Promise.resolve(undefined);
    this.starting = previous.then((current) => (current?.alive ? current : this.start()));
    return this.starting;
  }

  private async start(): Promise<DaemonSession> {
    await this.options.store.init();
    await prepareViewsDir(this.options.store.layout, (path) => this.options.qemuImg.lockState(path));
    const s = await DaemonSession.start({ ...this.options, onNodeClosed: (path, session) => this.stampClosed(path, session) });
    const retry = new DeferredRetry(s, this.locks, this.options.commandTimeoutMs);
    if (this.closed) retry.stop();
    this.retries.add(retry);
    this.unexited.add(s);
    s.deferred.onQueued((node, fresh) => retry.schedule(node, fresh));
    void s.daemon.whenExited.then(() => {
      retry.stop();
      this.retries.delete(retry);
      this.unexited.delete(s);
      if (s.stopRequested) return;
      this.options.onSessionLost(s);
      void s.daemon.kill().catch(() => {}); // reaps the client and removes the daemon's temp dir
    });
    return s;
  }

  /**
   * A volume image the daemon let go of gets its stamp (volume-stamp.ts); other images (overlays,
   * copies) none. The sidecar changes only while this daemon holds the image (README): the stamp
   * is saved under holdImage, taken right after the close. When the hold cannot be taken (BUSY:
   * another instance opened the image in between; NOT_FOUND: deleted) nothing is written and the
   * old stamp stays, which no longer matches: a full backup, never a wrong incremental, and never
   * a sidecar written over another instance's change or recreated after its deletion. Nothing is
   * written either for an image whose stamp check failed at its open (`unchecked`), nor when the
   * daemon (whose death lets the hold go) is found gone right before the write (saveVolumeStamp's
   * `held`, checked after the settle wait). Never throws.
   */
  private async stampClosed(path: string, session: DaemonSession): Promise<void> {
    const { layout } = this.options.store;
    const name = basename(path);
    if (dirname(path) !== layout.dir('volume') || !name.endsWith('.qcow2')) return;
    const volumeId = name.slice(0, -'.qcow2'.length);
    if (layout.image('volume', volumeId) !== path) return;
    if (this.unchecked.get(session)?.delete(path)) return;
    let release: () => Promise<void>;
    try {
      release = await holdImage(session, path, volumeId, this.options.driver);
    } catch {
      return;
    }
    try {
      await saveVolumeStamp(this.options.store, volumeId, () => session.alive);
    } finally {
      await release().catch(() => {}); // a failed release is queued and retried (DeferredWork)
    }
  }

  /** The running session without starting one. */
  async running(): Promise<DaemonSession | undefined> {
    const s = await this.starting?.catch(() => undefined);
    return s?.alive ? s : undefined;
  }

  /**
   * Opens a volume's image as a writable node (or takes another reference). When this call
   * opened it, the image's stamp taken before the open is checked (volume-stamp.ts: a write made
   * outside the driver makes every checkpoint not consistent), then the checkpoint chain is
   * reconciled with the bitmaps qemu loaded; when the node was already open, the work deferred on it runs first (DeferredWork), and an unsettled chain is
   * reconciled (see checkpoint-reconcile.ts). Before anything, the work deferred under the
   * volume runs (finishPending: a hold of its image whose release failed would refuse this open).
   * When the stamp check fails (the sidecar cannot be read, say), the node's close saves no stamp
   * (`unchecked`): the next open still sees the mismatch. Callers hold the volume's lock.
   */
  async openVolume(volumeId: string): Promise<{ session: DaemonSession; node: string }> {
    const session = await this.session();
    const path = this.options.store.layout.image('volume', volumeId);
    await this.finishPending(session, volumeId);
    // Taken before the open, which writes the image; compared once this daemon holds it.
    const before = session.nodeOf(path) ? undefined : await imageStampNow(this.options.store, 'volume', volumeId);
    const { name, fresh } = await session.openNode(path, false);
    try {
      if (fresh) {
        // Written outside the driver since it last closed the image? Then no checkpoint is trusted.
        await checkVolumeStamp(this.options.store, volumeId, before).catch((err: unknown) => {
          this.unchecked.set(session, (this.unchecked.get(session) ?? new Set()).add(path));
          throw err;
        });
        await reconcileCheckpoints(session, name, this.options.store, volumeId);
      } else {
        await session.deferred.run(name);
        await settleCheckpoints(session, name, this.options.store, volumeId);
      }
    } catch (err) {
      await session.releaseNode(path, volumeId).catch(() => {});
      throw err;
    }
    return { session, node: name };
  }

  /**
   * Runs the work deferred in `session` under `volumeId`'s lock, on any node (DeferredWork): the
   * volume's node, its views, the release of a hold of its image or of a snapshot copy's file
   * (holdImage), whose failure would otherwise keep this daemon's own next open or hold of the
   * image refused (BUSY) until the session's retry timer. Throws the first work's error while it
   * still fails (it stays queued). Callers hold the volume's lock.
   */
  async finishPending(session: DaemonSession, volumeId: string): Promise<void> {
    for (const { node, volumeId: owner } of session.deferred.pending()) if (owner === volumeId) await session.deferred.run(node);
  }

  /** Reconciles an open volume node if it is unsettled. Callers hold the volume's lock. */
  settleVolume(session: DaemonSession, node: string, volumeId: string): Promise<void> {
    return settleCheckpoints(session, node, this.options.store, volumeId);
  }

  /**
   * Runs the work deferred on the volume's node, if the running daemon has it open (DeferredWork);
   * this may close the node. Callers hold the volume's lock.
   */
  async finishDeferred(volumeId: string): Promise<void> {
    const session = await this.running();
    const node = session?.nodeOf(this.options.store.layout.image('volume', volumeId));
    if (session && node) await session.deferred.run(node);
  }

  /** Whether the running daemon has the volume's image open. */
  async isOpen(volumeId: string): Promise<boolean> {
    return (await this.running())?.nodeOf(this.options.store.layout.image('volume', volumeId)) !== undefined;
  }

  /** Drops a reference taken by openVolume (DaemonSession.releaseNode). Callers hold the volume's lock. */
  async releaseVolume(session: DaemonSession, volumeId: string): Promise<void> {
    await session.releaseNode(this.options.store.layout.image('volume', volumeId), volumeId);
  }

  /** The daemon's pid while one runs (for supervision and crash tests). */
  async daemonPid(): Promise<number | undefined> {
    return (await this.running())?.daemon.pid;
  }

  /**
   * Stops the daemon cleanly (persistent bitmaps are written; DaemonSession.stop, given
   * `stopTimeoutMs`, not the command timeout), then removes this instance's views
   * directory with the overlays of views whose teardown was still deferred (views never outlive
   * their daemon; other instances' overlays are not touched). Later calls fail with UNAVAILABLE.
   * Daemons given up on earlier while stuck (a detach's abandon left them behind) are waited for
   * again, each bounded as DaemonSession.abandon. When any daemon is still there after that, the
   * first such UNAVAILABLE `left behind` (`details.leftBehind`, `pid`) is thrown, after every
   * daemon was tried, and the views directory stays (the stuck daemon may hold its overlays);
   * a later call tries again. Idempotent.
   */
  async close(): Promise<void> {
    this.closed = true;
    for (const retry of this.retries) retry.stop();
    const current = await this.starting?.catch(() => undefined);
    let failure: unknown;
    await current?.stop().catch((err: unknown) => (failure ??= err));
    for (const s of [...this.unexited]) if (s !== current) await s.abandon().catch((err: unknown) => (failure ??= err));
    if (failure !== undefined) throw failure;
    await removeViewsDir(this.options.store.layout).catch(() => {});
  }
}
