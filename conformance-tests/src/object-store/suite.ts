import type { Group } from '../harness.js';
import { registerGroups } from '../harness.js';
import type { ObjectStoreContext, ObjectStoreSuiteOptions } from './context.js';
import { newPrefix, objectConcurrency, objectListing, objectPartWrites, objectReadInto, objectReadWrite } from './cases.js';
import { objectCancellation, objectCancellationMidCall } from './cancellation.js';
import { objectForeignEntries } from './foreign-entries.js';
import { objectSpaceReserve } from './space-reserve.js';
import { objectSweepTemp } from './sweep-temp.js';
import { objectPartWriteRaces } from './races.js';
import type { ObjectStoreCapabilities } from '@cairn/core';

/**
 * Groups for a store's declared capabilities (concurrency only with atomic ifAbsent, getInto only
 * with readInto, openWrite only with writeInParts, concurrent commits only with both atomic ifAbsent and writeInParts, sweepTemp only with sweepsTemp, signals only with cancellable, the reserve only with spaceReserve), and the foreign-entry cases when the store can
 * have them planted (`foreign`: ObjectStoreSuiteOptions.plantForeign is given).
 */
export function objectStoreGroups(caps: ObjectStoreCapabilities, foreign = false): Group<ObjectStoreContext>[] {
  return [
    objectReadWrite,
    objectListing,
    ...(caps.atomicIfAbsent ? [objectConcurrency] : []),
    ...(caps.readInto ? [objectReadInto] : []),
    ...(caps.writeInParts ? [objectPartWrites] : []),
    ...(caps.atomicIfAbsent && caps.writeInParts ? [objectPartWriteRaces] : []),
    ...(caps.sweepsTemp ? [objectSweepTemp(caps)] : []),
    ...(caps.cancellable ? [objectCancellation(caps), objectCancellationMidCall(caps)] : []),
    ...(caps.spaceReserve ? [objectSpaceReserve] : []),
    ...(foreign ? [objectForeignEntries] : []),
  ];
}

/** Registers the object-store suite with vitest. Each case works under its own key prefix. */
export function objectStoreSuite(title: string, options: ObjectStoreSuiteOptions): void {
  registerGroups(title, objectStoreGroups(options.capabilities, options.plantForeign !== undefined), {
    setup: async () => ({ store: await options.factory(), prefix: newPrefix(), listKeys: options.listKeys, plantForeign: options.plantForeign }),
    teardown: async (ctx) => options.dispose?.(ctx.store),
    beforeAll: options.beforeAll,
    afterAll: options.afterAll,
    timeout: options.timeout,
  });
}
