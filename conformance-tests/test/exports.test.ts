/**
 * Every object-store group the suite can run is exported singly from the package's index, so a
 * plugin can run one group (a factory taking the capabilities, for the groups that depend on them).
 */
import { describe, expect, it } from 'vitest';
import type { ObjectStoreCapabilities } from '@cairn/core';
import * as conformance from '../src/index.js';

describe('the conformance index', () => {
  it('exports each object-store group singly, beside objectStoreGroups', () => {
    const caps: ObjectStoreCapabilities = { atomicIfAbsent: true, readInto: true, writeInParts: true, sweepsTemp: true, cancellable: true, spaceReserve: true };
    const names = new Set<string>();
    const isGroup = (v: unknown): v is { name: string } => typeof v === 'object' && v !== null && 'cases' in v && 'name' in v;
    // The object-store exports (`object…`): groups, and factories of a group from the capabilities.
    for (const [key, value] of Object.entries(conformance as Record<string, unknown>)) {
      if (!key.startsWith('object') || key === 'objectStoreGroups' || key === 'objectStoreSuite') continue;
      const group = typeof value === 'function' ? (value as (c: ObjectStoreCapabilities) => unknown)(caps) : value;
      if (isGroup(group)) names.add(group.name);
    }
    const groups = conformance.objectStoreGroups(caps, true);
    expect(groups.length).toBeGreaterThan(5);
    for (const g of groups) expect(names, g.name).toContain(g.name);
  });
});
