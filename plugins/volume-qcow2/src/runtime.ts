import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, KeyedMutex } from '@cairn/core';
import { reconcileCheckpoints, settleCheckpoints } from './checkpoint-reconcile.js';
import { DaemonSession } from './daemon-session.js';
import type { RecordStore } from './record-store.js';

/** Deferred work is retried at most this many command timeouts apart (the I/O timeout). */
const RETRY_CAP_FACTOR = 10;

export interface RuntimeOptions {
  driver: string;
  binary: string;
  runtimeDir: string;
  commandTimeoutMs: number;
  store: RecordStore;
  /** Called once when a daemon exits without being asked to (crash, SIGKILL). */
  onSessionLost: (session: DaemonSession) => void;
}

/**
 * The driver's process model: at most one qemu-storage-daemon at a time, started on first need,
 * restarted on the next need after it died, stopped by `close()`. Also the per-volume lock that
 * serializes structural changes (attach, detach, snapshot, checkpoint, extend, delete), and the
 * stack of copy-before-write filters that fleecing views put above a volume's node: new exports
 * of a volume must sit on the top of it so that their writes pass through every filter. And the
 * timer that retries deferred cleanup while no call uses its node (see scheduleRetry).
 */
export class Runtime {
  /** Per-volume lock for structural changes. */
  readonly locks = new KeyedMutex();
  private starting: Promise<DaemonSession> | undefined;
  private closed = false;
  private readonly filters = new Map<string, string[]>();
  private retryTimer: NodeJS.Timeout | undefined;
  private retrying = false;
  private retryFailures = 0;

  constructor(private readonly options: RuntimeOptions) {}

  /**
   * The running session, starting a daemon when none runs. Calls are chained, so concurrent
   * callers share one start. `UNAVAILABLE` when it cannot start or after `close()`.
   */
  session(): Promise<DaemonSession> {
    if (this.closed) return Promise.reject(new CairnError('UNAVAILABLE', 'driver is closed', { driver: this.options.driver }));
    const previous = this.starting?.catch(() => undefined) ?? Promise.resolve(undefined);
    this.starting = previous.then((current) => (current?.alive ? current : this.start()));
    return this.starting;
  }

  private async start(): Promise<DaemonSession> {
    await this.clearStaleOverlays();
    const s = await DaemonSession.start(this.options);
    this.retryFailures = 0;
    s.deferred.onQueued(() => this.scheduleRetry(s));
    void s.daemon.whenExited.then(() => {
      this.filters.clear();
      if (s.stopRequested) return;
      this.options.onSessionLost(s);
      void s.daemon.kill().catch(() => {}); // reaps the client and removes the daemon's temp dir
    });
    return s;
  }

  /** Views never outlive a daemon: overlays left by a crashed process are removed before a new one starts. */
  private async clearStaleOverlays(): Promise<void> {
    const dir = this.options.store.layout.viewsDir;
    await this.options.store.init();
    for (const name of await readdir(dir)) await rm(join(dir, name), { force: true });
  }

  /** The running session without starting one. */
  async running(): Promise<DaemonSession | undefined> {
    const s = await this.starting?.catch(() => undefined);
    return s?.alive ? s : undefined;
  }

  /**
   * Opens a volume's image as a writable node (or takes another reference). When this call
   * opened it, the checkpoint chain is reconciled with the bitmaps qemu loaded; when the node was
   * already open, the work deferred on it runs first (DeferredWork), and an unsettled chain is
   * reconciled (see checkpoint-reconcile.ts). Callers hold the volume's lock.
   */
  async openVolume(volumeId: string): Promise<{ session: DaemonSession; node: string }> {
    const session = await this.session();
    const path = this.options.store.layout.image('volume', volumeId);
    const { name, fresh } = await session.openNode(path, false);
    try {
      if (fresh) {
        await reconcileCheckpoints(session, name, this.options.store, volumeId);
      } else {
        await session.deferred.run(name);
        await settleCheckpoints(session, name, this.options.store, volumeId);
      }
    } catch (err) {
      await session.releaseNode(path).catch(() => {});
      throw err;
    }
    return { session, node: name };
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

  /**
   * Runs the work deferred in `s` without waiting for a use of its nodes (DeferredWork), so a
   * volume nobody uses again does not keep its node, view or export — nor the image's lock — for
   * the daemon's lifetime. A retry runs one command timeout after work was queued, then twice as
   * long after each retry that left work queued, up to the I/O timeout (10 command timeouts):
   * a stalled daemon is not flooded, and one that answers again is cleaned up within that bound.
   * Each node's work runs under its volume's lock, like any structural change; its errors stay
   * with the work (the next use of the node reports them). Stops with the daemon or `close()`.
   */
  private scheduleRetry(s: DaemonSession): void {
    if (this.closed || this.retryTimer || this.retrying || !s.alive) return;
    const delay = Math.min(this.options.commandTimeoutMs * 2 ** this.retryFailures, this.options.commandTimeoutMs * RETRY_CAP_FACTOR);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.retryDeferred(s);
    }, delay);
    this.retryTimer.unref(); // never keeps the process alive by itself
  }

  private async retryDeferred(s: DaemonSession): Promise<void> {
    this.retrying = true;
    let failed = false;
    try {
      for (const { node, volumeId } of s.deferred.pending()) {
        if (this.closed || !s.alive) return;
        await this.locks.run(volumeId, () => s.deferred.run(node)).catch(() => (failed = true));
      }
    } finally {
      this.retrying = false;
    }
    this.retryFailures = failed ? this.retryFailures + 1 : 0;
    if (s.deferred.pending().length) this.scheduleRetry(s);
  }

  /** Whether the running daemon has the volume's image open. */
  async isOpen(volumeId: string): Promise<boolean> {
    return (await this.running())?.nodeOf(this.options.store.layout.image('volume', volumeId)) !== undefined;
  }

  /** Drops a reference taken by openVolume. */
  async releaseVolume(session: DaemonSession, volumeId: string): Promise<void> {
    await session.releaseNode(this.options.store.layout.image('volume', volumeId));
  }

  /**
   * The node new exports of the volume attach to. Each fleecing job inserts its filter directly
   * above the volume's node, below the filters already there, so the top is the oldest filter
   * still present (else the node itself).
   */
  top(volumeId: string, node: string): string {
    return this.filters.get(volumeId)?.[0] ?? node;
  }

  pushFilter(volumeId: string, filter: string): void {
    this.filters.set(volumeId, [...(this.filters.get(volumeId) ?? []), filter]);
  }

  removeFilter(volumeId: string, filter: string): void {
    const rest = (this.filters.get(volumeId) ?? []).filter((f) => f !== filter);
    if (rest.length) this.filters.set(volumeId, rest);
    else this.filters.delete(volumeId);
  }

  /** The daemon's pid while one runs (for supervision and crash tests). */
  async daemonPid(): Promise<number | undefined> {
    return (await this.running())?.daemon.pid;
  }

  /**
   * Stops the daemon cleanly (persistent bitmaps are written), then removes the overlays of views
   * whose teardown was still deferred (views never outlive their daemon). Later calls fail with
   * UNAVAILABLE. Idempotent.
   */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const s = await this.starting?.catch(() => undefined);
    if (!s) return;
    await s.stop();
    await this.clearStaleOverlays().catch(() => {});
  }
}
