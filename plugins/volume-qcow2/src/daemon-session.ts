import { join } from 'node:path';
import { CairnError, KeyedMutex, toCairnError } from '@cairn/core';
import { QemuStorageDaemon, type BlockDirtyInfo, type QmpClient } from '@cairn/qmp';

export interface SessionOptions {
  /** Program to run. */
  binary: string;
  /** Parent of the daemon's temp dir (QMP and NBD sockets). */
  runtimeDir: string;
  driver: string;
}

interface OpenNode {
  name: string;
  refs: number;
  readOnly: boolean;
}

/**
 * One running qemu-storage-daemon: its QMP client, the NBD server on a unix socket in the
 * daemon's temp dir, and the format nodes it has open (one per image, reference-counted).
 * A session never restarts: once the daemon has exited, `alive` is false and every call fails
 * with `UNAVAILABLE`; the driver starts a new session.
 */
export class DaemonSession {
  private readonly nodes = new Map<string, OpenNode>();
  private readonly nodeLocks = new KeyedMutex();
  private counter = 0;
  private stopping = false;

  private constructor(
    readonly daemon: QemuStorageDaemon,
    /** The NBD server's unix socket. */
    readonly nbdSocket: string,
    private readonly driver: string,
  ) {}

  /** Starts the daemon and its NBD server. `UNAVAILABLE` when the daemon cannot run. */
  static async start(options: SessionOptions): Promise<DaemonSession> {
    const daemon = await QemuStorageDaemon.start({ binary: options.binary, tmpParent: options.runtimeDir, driver: options.driver });
    const nbdSocket = join(daemon.dir, 'nbd.sock');
    try {
      await daemon.qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbdSocket } } });
    } catch (err) {
      await daemon.kill();
      throw err;
    }
    return new DaemonSession(daemon, nbdSocket, options.driver);
  }

  get qmp(): QmpClient {
    return this.daemon.qmp;
  }

  get alive(): boolean {
    return !this.daemon.exit && !this.qmp.closed;
  }

  /** Waits up to `ms` for the daemon to exit; true if it has. */
  async exitedWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const exited = await Promise.race([
      this.daemon.whenExited.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
    ]);
    clearTimeout(timer);
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

  /** The node of an open image, if any. */
  nodeOf(path: string): string | undefined {
    return this.nodes.get(path)?.name;
  }

  /**
   * Opens `path` as a qcow2 node (or takes another reference to it). `fresh` is true when this
   * call opened it. Writable nodes discard and detect zeroes (`unmap`) so zero writes stay sparse.
   * `BUSY` when another process holds the image's lock.
   */
  async openNode(path: string, readOnly: boolean): Promise<{ name: string; fresh: boolean }> {
    return this.nodeLocks.run(path, () => this.doOpenNode(path, readOnly));
  }

  private async doOpenNode(path: string, readOnly: boolean): Promise<{ name: string; fresh: boolean }> {
    const open = this.nodes.get(path);
    if (open) {
      open.refs++;
      return { name: open.name, fresh: false };
    }
    const name = this.nextName(readOnly ? 'ro' : 'rw');
    try {
      await this.qmp.execute('blockdev-add', {
        driver: 'qcow2',
        'node-name': name,
        'read-only': readOnly,
        ...(readOnly ? {} : { discard: 'unmap', 'detect-zeroes': 'unmap' }),
        file: { driver: 'file', filename: path, 'read-only': readOnly },
      });
    } catch (err) {
      const e = toCairnError(err, this.driver, `open ${path}`);
      throw e.code === 'CONFLICT' ? new CairnError('BUSY', `image ${path} is locked by another process`, { driver: this.driver, cause: err }) : e;
    }
    this.nodes.set(path, { name, refs: 1, readOnly });
    return { name, fresh: true };
  }

  /** Drops a reference; the last one closes the node (which writes its persistent bitmaps). Idempotent per reference. */
  async releaseNode(path: string): Promise<void> {
    return this.nodeLocks.run(path, () => this.doReleaseNode(path));
  }

  private async doReleaseNode(path: string): Promise<void> {
    const open = this.nodes.get(path);
    if (!open) return;
    if (--open.refs > 0) return;
    this.nodes.delete(path);
    if (this.alive) await this.qmp.execute('blockdev-del', { 'node-name': open.name });
  }

  /** Dirty bitmaps of a node. */
  async bitmaps(node: string): Promise<BlockDirtyInfo[]> {
    const nodes = await this.qmp.execute('query-named-block-nodes', { flat: true });
    return nodes.find((n) => n['node-name'] === node)?.['dirty-bitmaps'] ?? [];
  }

  /** Exports `node` over NBD under a fresh name, which is returned (also the export id). */
  async addExport(node: string, writable: boolean, bitmaps: string[] = []): Promise<string> {
    const id = this.nextName('exp');
    await this.qmp.execute('block-export-add', { type: 'nbd', id, 'node-name': node, name: id, writable, ...(bitmaps.length ? { bitmaps } : {}) });
    return id;
  }

  /** Removes an export (dropping any client left) and waits for BLOCK_EXPORT_DELETED. Idempotent. */
  async deleteExport(id: string): Promise<void> {
    if (!this.alive) return;
    const gone = this.qmp.waitForEvent('BLOCK_EXPORT_DELETED', (e) => e.data.id === id);
    try {
      await this.qmp.execute('block-export-del', { id, mode: 'hard' });
    } catch (err) {
      if ((err as CairnError).code === 'NOT_FOUND') return;
      throw err;
    }
    await gone;
  }

  /** Clean shutdown (`quit`): qemu closes every node and writes persistent bitmaps. Idempotent. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.daemon.stop();
    this.nodes.clear();
  }
}
