import { hostname } from 'node:os';
import { nowIso, type CairnError } from '@cairn/core';
import type { QemuImg } from './qemu-img.js';
import type { RecordStore } from './record-store.js';
import type { VolumeRecord, WriterMark } from './records.js';
import type { Runtime } from './runtime.js';

/** At most this many lock probes (`qemu-img info` processes) run at once per driver instance. */
const PROBE_CONCURRENCY = 4;

/**
 * What other driver instances (other processes) on the same directory do with its volumes, as far
 * as this one can tell. Two facts serve:
 *
 * - the image's lock: a daemon that has an image open holds qemu's lock on it, and it always opens
 *   volumes writable (for `ro` attachments, views and checkpoint work too), so `qemu-img info`
 *   without `-U` fails with a lock error exactly while another daemon has the image open;
 * - the writer mark in the volume's sidecar (`writer`): set by an instance while it has the volume
 *   attached `rw` and holds the image, cleared before it lets the image go. The lock alone cannot
 *   tell a writer from a reader; the mark alone outlives a process that died.
 *
 * So a volume is written elsewhere while it carries a mark that is not this instance's and another
 * daemon holds its image. A mark whose image nobody else holds is stale (its writer died, or its
 * clear failed): it counts for nothing, and the next attach here (which holds the image) removes
 * it. Each answer is a snapshot: another process may attach or detach right after it.
 */
export class OtherInstances {
  /** This driver instance (two instances in one process are two writers as much as two processes are). */
  private readonly instance: string;
  /** Bounds the `qemu-img` processes the probes spawn (listVolumes probes every marked volume at once). */
  private readonly probes = new ConcurrencyLimit(PROBE_CONCURRENCY);

  constructor(
    private readonly driver: string,
    private readonly store: RecordStore,
    private readonly qemuImg: QemuImg,
    private readonly runtime: Runtime,
  ) {
    this.instance = store.layout.instance;
  }

  /**
   * Marks the volume as attached `rw` by this instance. Callers hold the volume's lock and have its
   * image open (so no other daemon holds it and every mark there is stale). Idempotent.
   */
  async markWriter(volumeId: string): Promise<void> {
    const mark: WriterMark = { instance: this.instance, pid: process.pid, hostname: hostname(), since: nowIso() };
    await this.store.updateVolume(volumeId, (r) => {
      r.writer = mark;
    });
  }

  /**
   * Removes the volume's writer mark, whoever set it; writes the sidecar only when there is one.
   * Callers hold the volume's lock and still have its image open: a mark another instance set since
   * cannot exist. Idempotent.
   */
  async clearMark(volumeId: string): Promise<void> {
    if (!(await this.store.volume(volumeId)).writer) return;
    await this.store.updateVolume(volumeId, (r) => {
      r.writer = null;
    });
  }

  /**
   * Whether another instance has the volume attached `rw` (see the class comment). False when this
   * instance's daemon has the image open: no other daemon can then hold it. A mark whose image
   * cannot be probed (qemu-img fails for another reason than a lock or a missing file: a damaged
   * image, no permission, no qemu-img) cannot be shown stale, so it counts: true.
   */
  async writesElsewhere(r: VolumeRecord): Promise<boolean> {
    if (!r.writer || r.writer.instance === this.instance) return false;
    if (await this.runtime.isOpen(r.id)) return false;
    return this.heldElsewhere(r.id).catch(() => true);
  }

  /**
   * Whether a daemon (not this instance's) holds the image's lock: `qemu-img info` fails with
   * qemu's lock failure (BUSY; see image-lock.ts). A missing image is held by nobody; any other
   * failure is thrown. At most PROBE_CONCURRENCY probes run at once.
   */
  private async heldElsewhere(volumeId: string): Promise<boolean> {
    try {
      await this.probes.run(() => this.qemuImg.info(this.store.layout.image('volume', volumeId)));
      return false;
    } catch (err) {
      const code = (err as CairnError).code;
      if (code === 'BUSY') return true;
      if (code === 'NOT_FOUND') return false; // deleted meanwhile: nobody holds it
      throw err;
    }
  }
}

/** Runs at most `max` tasks at once; the others wait in arrival order. */
class ConcurrencyLimit {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly max: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active < this.max) this.active++;
    else await new Promise<void>((resolve) => this.waiting.push(resolve)); // a finishing task hands its slot over
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}
