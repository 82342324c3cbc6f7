import { millisecondsFromEnv } from '../config/env-milliseconds.js';

/**
 * Bounds of the qemu-img runs of `volume import` and `volume export` (see runBounded of
 * @cairn/core), so a qemu-img hung on dead storage (a stopped NFS server) fails the command with
 * `UNAVAILABLE` instead of hanging it: metadata runs (`info`, `check`, `map`) at most `timeoutMs` in all;
 * `convert` never `stallMs` without progress (read/write counters of the process), however long
 * the copy takes in all.
 */
export interface QemuImgBounds {
  timeoutMs: number;
  stallMs: number;
}

/**
 * Defaults: those of the qcow2 volume driver's qemu-img runs (its `qemuImgTimeoutMs` and
 * `qemuImgStallMs`): two minutes is far beyond what `info` or `check` of a sound image takes, or
 * any pause of a copy that is moving, and short enough for an operator to see a hang.
 */
export const DEFAULT_QEMU_IMG_BOUNDS: QemuImgBounds = { timeoutMs: 120_000, stallMs: 120_000 };

/** Environment variables that override DEFAULT_QEMU_IMG_BOUNDS (milliseconds), documented in docs/cli.md. */
export const QEMU_IMG_BOUNDS_ENV: Record<keyof QemuImgBounds, string> = {
  timeoutMs: 'CAIRN_QEMU_IMG_TIMEOUT_MS',
  stallMs: 'CAIRN_QEMU_IMG_STALL_MS',
};

/** The bounds `env` sets over the defaults; `INVALID_INPUT` naming the variable for a value that is not a whole number from 1 to 86400000 (a day). */
export function qemuImgBoundsFromEnv(env: NodeJS.ProcessEnv): QemuImgBounds {
  return { ...DEFAULT_QEMU_IMG_BOUNDS, ...millisecondsFromEnv(env, QEMU_IMG_BOUNDS_ENV, 86_400_000) };
}
