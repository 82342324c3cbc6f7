import type { BlockDevice, Extent } from '@cairn/core';
import type { NbdBackend, ReadRun, StatusDescriptor } from './nbd-backend.js';
import { BASE_ALLOCATION, DIRTY_BITMAP_PREFIX, STATE_DIRTY, STATE_HOLE, STATE_ZERO } from './protocol.js';

export interface BlockDeviceBackendOptions {
  /**
   * Checkpoint ids served as `qemu:dirty-bitmap:<id>` contexts, from
   * `device.extents({kind:'changed', since: id})`. Default none.
   */
  checkpoints?: string[];
}

/**
 * Serves a Cairn BlockDevice over NBD: reads return holes where the device reports no allocated
 * extent, `base:allocation` comes from `extents({kind:'allocated'})`, writes go to the device
 * (read-only when the device is `ro`); a FUA write or write-zeroes is answered only after
 * `device.flush()`; a write-zeroes with NBD_CMD_FLAG_NO_HOLE writes zeros as data (never
 * `device.writeZeroes`, which may deallocate). Device errors pass through as CairnErrors.
 */
export function blockDeviceBackend(device: BlockDevice, options: BlockDeviceBackendOptions = {}): NbdBackend {
  const checkpoints = options.checkpoints ?? [];
  const backend: NbdBackend = {
    size: device.size,
    readOnly: device.mode === 'ro',
    metaContexts: checkpoints.map((c) => DIRTY_BITMAP_PREFIX + c),
    async read(offset, length) {
      const extents = await device.extents({ kind: 'allocated' }, { offset, length });
      const runs: ReadRun[] = [];
      let at = offset;
      for (const e of extents) {
        if (e.offset > at) runs.push({ zero: e.offset - at });
        runs.push(e.zero ? { zero: e.length } : await device.read(e.offset, e.length));
        at = e.offset + e.length;
      }
      if (at < offset + length) runs.push({ zero: offset + length - at });
      return runs;
    },
    async blockStatus(context, offset, length) {
      if (context === BASE_ALLOCATION) {
        const extents = await device.extents({ kind: 'allocated' }, { offset, length });
        return descriptors(extents, offset, length, (e) => (e.zero ? STATE_ZERO : 0), STATE_HOLE | STATE_ZERO);
      }
      const since = context.startsWith(DIRTY_BITMAP_PREFIX) ? context.slice(DIRTY_BITMAP_PREFIX.length) : undefined;
      if (since === undefined || !checkpoints.includes(since)) return undefined;
      const changed = await device.extents({ kind: 'changed', since }, { offset, length });
      return descriptors(changed, offset, length, () => STATE_DIRTY, 0);
    },
  };
  if (device.mode === 'rw') {
    // The server offers NBD_FLAG_SEND_FUA for a writable backend. proto.md: a request with
    // NBD_CMD_FLAG_FUA is answered only once its data reached permanent storage; a BlockDevice
    // makes writes durable only through flush(), so a FUA write or write-zeroes flushes first.
    backend.write = async (offset, data, { fua }) => {
      await device.write(offset, data);
      if (fua) await device.flush();
    };
    // proto.md, NBD_CMD_WRITE_ZEROES: without NBD_CMD_FLAG_NO_HOLE the server MAY trim; with it
    // "the area MUST be fully provisioned", and a server offering SEND_WRITE_ZEROES MUST support
    // the flag. BlockDevice.writeZeroes may deallocate and the contract has no call asking for
    // allocated zeroes, so with NO_HOLE (`mayTrim` false) zeros are written as data instead.
    backend.writeZeroes = async (offset, length, { fua, mayTrim }) => {
      if (mayTrim) await device.writeZeroes(offset, length);
      else await writeZeroData(device, offset, length);
      if (fua) await device.flush();
    };
    backend.flush = () => device.flush();
  }
  return backend;
}

/** Zeros written with `device.write` (which allocates), in pieces of at most `ZERO_DATA.length` bytes. */
async function writeZeroData(device: BlockDevice, offset: number, length: number): Promise<void> {
  for (let at = offset, end = offset + length; at < end; at += ZERO_DATA.length) {
    await device.write(at, ZERO_DATA.subarray(0, Math.min(ZERO_DATA.length, end - at)));
  }
}

/** Shared, never written to: the source of the zeros `writeZeroData` writes. */
const ZERO_DATA = Buffer.alloc(1024 * 1024);

/** Extents → consecutive descriptors over `[offset, offset+length)`, gaps flagged `gapFlags`. */
function descriptors(extents: Extent[], offset: number, length: number, flagsOf: (e: Extent) => number, gapFlags: number): StatusDescriptor[] {
  const out: StatusDescriptor[] = [];
  let at = offset;
  for (const e of extents) {
    if (e.offset > at) out.push({ length: e.offset - at, flags: gapFlags });
    out.push({ length: e.length, flags: flagsOf(e) });
    at = e.offset + e.length;
  }
  if (at < offset + length) out.push({ length: offset + length - at, flags: gapFlags });
  return out;
}
