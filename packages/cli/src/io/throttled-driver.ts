import { RateBudget, throttleReads, type Attachment, type AttachMode, type AttachTarget, type VolumeDriver } from '@cairn/core';

/**
 * A view of `driver` whose attached devices read at most `bytesPerSecond`, all devices of the
 * view sharing one budget (core's RateBudget). Everything else passes through unchanged,
 * capabilities included. Used by `--read-rate` to keep backups from starving the volumes'
 * other users; a single backup can also be paced alone (`BackupRequest.readRate`).
 */
export function throttledDriver(driver: VolumeDriver, bytesPerSecond: number): VolumeDriver {
  const budget = new RateBudget(bytesPerSecond);
  return new Proxy(driver, {
    get(target, prop) {
      if (prop === 'attach') {
        return async (what: AttachTarget, mode: AttachMode): Promise<Attachment> => {
          const a = await target.attach(what, mode);
          return { ...a, device: throttleReads(a.device, budget) };
        };
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}
