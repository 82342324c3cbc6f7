import type { AttachMode, BlockDevice, ByteRange, Extent, ExtentQuery } from '../contracts/block-device.js';
import { CairnError, toCairnError } from '../errors.js';
import { assertRange, resolveRange } from '../util/validate.js';
import { normalizeExtents } from '../util/extents.js';

/**
 * The public BlockDevice methods validate (closed device, range, read-only) and tag errors with
 * the driver's name; subclasses implement only the `_primitives`, which receive checked input.
 */
export abstract class BaseBlockDevice implements BlockDevice {
  private closed = false;
  /** Why the driver gave the device up (lose), when it did: what every later call fails with. */
  private lostReason: CairnError | undefined;

  protected constructor(
    readonly driverName: string,
    readonly size: number,
    readonly mode: AttachMode,
    readonly extentGranularity: number,
  ) {}

  protected abstract _read(offset: number, into: Buffer): Promise<void>;
  protected abstract _write(offset: number, data: Uint8Array): Promise<void>;
  protected abstract _writeZeroes(offset: number, length: number): Promise<void>;
  protected abstract _flush(): Promise<void>;
  /**
   * Returns extents inside `range` with integer offsets and lengths; the base class sorts, clips
   * to `range` and merges them, and fails with `INTERNAL` on an offset or length that is no
   * integer (which clipping would drop without a word).
   */
  protected abstract _extents(query: ExtentQuery, range: ByteRange): Promise<Extent[]>;
  protected abstract _close(): Promise<void>;

  get isClosed(): boolean {
    return this.closed;
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.assertOpen();
    assertRange(offset, length, this.size, this.driverName);
    if (into && into.length < length) throw this.invalid(`read buffer of ${into.length} bytes is smaller than ${length}`);
    const target = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    if (length > 0) await this.guard(() => this._read(offset, target), 'read');
    return target;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.assertWritable();
    assertRange(offset, data.length, this.size, this.driverName);
    if (data.length > 0) await this.guard(() => this._write(offset, data), 'write');
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.assertWritable();
    assertRange(offset, length, this.size, this.driverName);
    if (length > 0) await this.guard(() => this._writeZeroes(offset, length), 'write-zeroes');
  }

  async flush(): Promise<void> {
    this.assertOpen();
    if (this.mode === 'rw') await this.guard(() => this._flush(), 'flush');
  }

  async extents(query: ExtentQuery, range?: ByteRange): Promise<Extent[]> {
    this.assertOpen();
    if (query?.kind !== 'allocated' && query?.kind !== 'changed') throw this.invalid(`unknown extent query ${JSON.stringify(query)}`);
    // A changed query without a checkpoint id is the caller's bug, not an unknown checkpoint: a
    // NOT_FOUND would send it to a full read, hiding the bug.
    if (query.kind === 'changed' && (typeof query.since !== 'string' || query.since === '')) {
      throw this.invalid(`extents(changed) needs a checkpoint id in since, got ${JSON.stringify(query.since)}`);
    }
    const r = resolveRange(range, this.size, this.driverName);
    const found = await this.guard(() => this._extents(query, r), 'extents');
    for (const e of found) {
      if (!Number.isSafeInteger(e?.offset) || !Number.isSafeInteger(e.length)) {
        throw new CairnError('INTERNAL', `extents(${query.kind}) listed ${JSON.stringify(e)}: offset and length must be integers`, { driver: this.driverName });
      }
    }
    return normalizeExtents(found, r);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.guard(() => this._close(), 'close');
  }

  /**
   * Closes the device because the driver lost what served it (e.g. qcow2: its qemu-storage-daemon
   * died), so that every later call fails with `reason` (its code and message: `UNAVAILABLE`, the
   * caller's retry or recovery decides) instead of the `INVALID_INPUT` of a device its caller
   * closed. Idempotent; the first reason stays. For drivers, not for the device's users.
   */
  async lose(reason: CairnError): Promise<void> {
    this.lostReason ??= reason;
    await this.close();
  }

  /** `INVALID_INPUT` once the caller closed the device; the driver's reason once it lost it (lose). */
  protected assertOpen(): void {
    if (this.lostReason) throw new CairnError(this.lostReason.code, this.lostReason.message, { driver: this.driverName, details: this.lostReason.details });
    if (this.closed) throw this.invalid('device is closed');
  }

  private assertWritable(): void {
    this.assertOpen();
    if (this.mode !== 'rw') throw this.invalid('device is attached read-only');
  }

  private invalid(message: string): CairnError {
    return new CairnError('INVALID_INPUT', message, { driver: this.driverName });
  }

  private async guard<T>(fn: () => Promise<T>, what: string): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toCairnError(err, this.driverName, what);
    }
  }
}
