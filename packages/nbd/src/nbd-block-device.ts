import { BaseBlockDevice, CairnError, quotedCut, type AttachMode, type ByteRange, type Extent, type ExtentQuery } from '@cairn/core';
import { NbdClient, type NbdConnectOptions } from './nbd-client.js';
import { SHOWN_NAME } from './nbd-string.js';
import { BASE_ALLOCATION, DIRTY_BITMAP_PREFIX, STATE_DIRTY, STATE_HOLE, STATE_ZERO } from './protocol.js';

export interface NbdBlockDeviceOptions {
  /** `ro` refuses writes locally; `rw` on a read-only export is `INVALID_INPUT`. Default: the export's own mode. */
  mode?: AttachMode;
  /**
   * Reported extent granularity (power of two ≥ 512): an upper bound on how far `base:allocation`
   * and dirty-bitmap ranges may stretch past written bytes. Pass the image's real value (qcow2
   * cluster size, dirty-bitmap granularity) when known. Default 65536 (qemu's default for both),
   * or the export's minimum block size if larger.
   */
  extentGranularity?: number;
  /** Name used in errors. Default the client's driver name. */
  driverName?: string;
  /**
   * Dirty bitmaps (`qemu:dirty-bitmap:<name>`) this device is meant to answer `changed` queries
   * from; asking for one of them that the server did not grant is `NOT_FOUND`, not `NOT_SUPPORTED`.
   * Default: those the client negotiated (`open` uses those it asked for).
   */
  trackedBitmaps?: string[];
}

/** qemu's default qcow2 cluster size and dirty-bitmap granularity (64 KiB). */
const DEFAULT_GRANULARITY = 64 * 1024;
/** Largest zero buffer written when the server lacks WRITE_ZEROES (1 MiB). */
const ZERO_FILL = 1024 * 1024;

/**
 * A BlockDevice over an NbdClient. `allocated` extents come from `base:allocation` (ranges with
 * the hole or zero flag are not data); without that context the whole range is reported as data.
 * `changed` since `X` comes from the `qemu:dirty-bitmap:X` context: `NOT_SUPPORTED` when the
 * connection negotiated no dirty bitmap at all, `NOT_FOUND` when it negotiated others but not X.
 * `close()` disconnects the client.
 */
export class NbdBlockDevice extends BaseBlockDevice {
  private readonly bitmaps: Set<string>;
  private readonly zeroFallback: boolean;

  constructor(
    readonly client: NbdClient,
    options: NbdBlockDeviceOptions = {},
  ) {
    const mode = options.mode ?? (client.readOnly ? 'ro' : 'rw');
    const driver = options.driverName ?? client.driver;
    if (mode === 'rw' && client.readOnly) throw new CairnError('INVALID_INPUT', 'export is read-only; cannot attach rw', { driver });
    super(driver, client.size, mode, options.extentGranularity ?? Math.max(DEFAULT_GRANULARITY, client.blockSizes.min));
    const negotiated = [...client.metaContexts.keys()].filter((c) => c.startsWith(DIRTY_BITMAP_PREFIX)).map((c) => c.slice(DIRTY_BITMAP_PREFIX.length));
    this.bitmaps = new Set(options.trackedBitmaps ?? negotiated);
    this.zeroFallback = !client.canWriteZeroes;
  }

  /** Connects a client and wraps it. Options as NbdClient.connect plus the device's own. */
  static async open(options: NbdConnectOptions & NbdBlockDeviceOptions): Promise<NbdBlockDevice> {
    const client = await NbdClient.connect(options);
    const requested = (options.metaContexts ?? []).filter((c) => c.startsWith(DIRTY_BITMAP_PREFIX)).map((c) => c.slice(DIRTY_BITMAP_PREFIX.length));
    try {
      return new NbdBlockDevice(client, { ...options, trackedBitmaps: options.trackedBitmaps ?? requested });
    } catch (err) {
      await client.disconnect();
      throw err;
    }
  }

  protected async _read(offset: number, into: Buffer): Promise<void> {
    await this.client.read(offset, into.length, into);
  }

  protected async _write(offset: number, data: Uint8Array): Promise<void> {
    await this.client.write(offset, data);
  }

  protected async _writeZeroes(offset: number, length: number): Promise<void> {
    if (!this.zeroFallback) return this.client.writeZeroes(offset, length);
    const zeros = Buffer.alloc(Math.min(length, ZERO_FILL));
    const jobs: Promise<void>[] = [];
    for (let at = offset; at < offset + length; at += zeros.length) {
      jobs.push(this.client.write(at, zeros.subarray(0, Math.min(zeros.length, offset + length - at))));
    }
    await Promise.all(jobs);
  }

  protected async _flush(): Promise<void> {
    await this.client.flush();
  }

  protected async _extents(query: ExtentQuery, range: ByteRange): Promise<Extent[]> {
    if (range.length === 0) return [];
    if (query.kind === 'allocated') {
      if (!this.client.metaContexts.has(BASE_ALLOCATION)) return [{ ...range }];
      const map = await this.client.mapExtents(BASE_ALLOCATION, range.offset, range.length);
      return map.filter((e) => (e.flags & (STATE_HOLE | STATE_ZERO)) === 0).map(({ offset, length }) => ({ offset, length }));
    }
    const context = DIRTY_BITMAP_PREFIX + query.since;
    if (!this.client.metaContexts.has(context)) {
      if (this.bitmaps.size === 0) throw new CairnError('NOT_SUPPORTED', 'no dirty bitmap was negotiated on this connection', { driver: this.driverName });
      throw new CairnError('NOT_FOUND', `checkpoint ${quotedCut(query.since, SHOWN_NAME)} has no exported dirty bitmap`, { driver: this.driverName });
    }
    const map = await this.client.mapExtents(context, range.offset, range.length);
    return map.filter((e) => (e.flags & STATE_DIRTY) !== 0).map(({ offset, length }) => ({ offset, length }));
  }

  protected async _close(): Promise<void> {
    await this.client.disconnect();
  }
}
