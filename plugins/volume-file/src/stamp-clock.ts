// The stamp clock moved to @cairn/core (drivers/stamp-clock.ts) with the image stamps.
export { CLOCK_PROBE, fileSystemClock, type StampClock } from '@cairn/core';
