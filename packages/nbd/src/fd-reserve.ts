import { closeSync, openSync } from 'node:fs';
import { devNull } from 'node:os';

/** How often a listening server checks whether the process is out of descriptors. */
const CHECK_INTERVAL_MS = 250;

/**
 * A spare file descriptor a listening server holds, so that it keeps accepting, and shedding,
 * connections while the process is out of descriptors, instead of spinning.
 *
 * Why: a pending connection keeps the listening socket readable. When accept() fails with EMFILE,
 * libuv (1.46, node 20) closes its own spare descriptor, accepts and closes the pending
 * connections, and reopens the spare. If another thread (the threadpool opening a file) takes the
 * freed slot first, that spare is lost. From then on each turn of the event loop retries accept(),
 * fails, and returns without telling node, and the loop polls again at once: a whole core until
 * descriptors are freed. Node reports nothing, so the only sign is that the process has no free
 * descriptor.
 *
 * Contract: every `intervalMs` (and at once on `shortage()`), when a probe open() of the null
 * device fails with EMFILE/ENFILE, the reserve is closed and `shedding` turns true: the server must
 * then close each new connection at once (which frees the slot for the next accept), as libuv
 * intends. `shedding` turns false, and the reserve is taken again, once two descriptors can be
 * opened (the reserve and one more). Any other error from open() (no null device) disables the
 * check; nothing else ever throws. Best effort: a slot freed here can still be taken by another
 * thread before accept() gets it; the next slot freed anywhere in the process ends the spin.
 */
export class FdReserve {
  private fd: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private shed = false;
  private disabled = false;

  constructor(
    /** Called on entering `shedding`, with the error that showed the shortage. */
    private readonly onShortage: (err: NodeJS.ErrnoException) => void,
    private readonly intervalMs = CHECK_INTERVAL_MS,
  ) {}

  /** True while the process is out of descriptors: close each new connection at once. */
  get shedding(): boolean {
    return this.shed;
  }

  /** Takes the reserve and starts checking (the timer does not keep the process alive). Idempotent. */
  start(): void {
    if (this.timer || this.disabled) return;
    const fd = this.open();
    if (this.disabled) return;
    this.timer = setInterval(() => this.check(), this.intervalMs);
    this.timer.unref();
    if (typeof fd === 'number') this.fd = fd;
    else if (fd) this.enterShedding(fd);
  }

  /** Stops checking and closes the reserve. Idempotent. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.release();
    this.shed = false;
  }

  /**
   * An accept failure was reported (EMFILE/ENFILE): sheds from now on, without waiting for the next
   * check, if a probe shows the process still out of descriptors.
   */
  shortage(err: NodeJS.ErrnoException): void {
    if (!this.timer || this.shed) return;
    const probe = this.open();
    if (typeof probe === 'number') close(probe);
    else if (probe) this.enterShedding(err);
  }

  private check(): void {
    if (!this.shed) {
      const probe = this.open();
      if (typeof probe === 'number') close(probe);
      else if (probe) this.enterShedding(probe);
      return;
    }
    const reserve = this.open();
    if (typeof reserve !== 'number') return;
    const probe = this.open();
    if (typeof probe !== 'number') {
      close(reserve); // still short: keep the slot free for accept()
      return;
    }
    close(probe);
    this.fd = reserve;
    this.shed = false;
  }

  private enterShedding(err: NodeJS.ErrnoException): void {
    this.release();
    this.shed = true;
    try {
      this.onShortage(err);
    } catch {
      // A failing reporter must not stop the shedding.
    }
  }

  /**
   * Opens the null device: its descriptor, or the EMFILE/ENFILE error when the process (or the
   * system) is out of descriptors. Any other failure disables the check and gives undefined.
   */
  private open(): number | NodeJS.ErrnoException | undefined {
    try {
      return openSync(devNull, 'r');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EMFILE' || e.code === 'ENFILE') return e;
      this.disabled = true;
      this.stop();
      return undefined;
    }
  }

  private release(): void {
    if (this.fd !== undefined) close(this.fd);
    this.fd = undefined;
  }
}

/** Closes a descriptor this module opened; never throws. */
function close(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // Already closed: nothing held.
  }
}
