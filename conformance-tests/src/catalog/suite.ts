import type { Group } from '../harness.js';
import { registerGroups } from '../harness.js';
import { catalogConcurrency, catalogConditionalWrites } from './cases.js';
import type { CatalogContext, CatalogSuiteOptions } from './context.js';

/** Groups for a catalog: concurrent writers only where ifAbsent is atomic. */
export function catalogGroups(options: Pick<CatalogSuiteOptions, 'atomicIfAbsent'>): Group<CatalogContext>[] {
  return [catalogConditionalWrites, ...(options.atomicIfAbsent ? [catalogConcurrency] : [])];
}

/** Registers the catalog suite with vitest. Each case gets an empty catalog. */
export function catalogSuite(title: string, options: CatalogSuiteOptions): void {
  registerGroups(title, catalogGroups(options), {
    setup: async () => ({ catalog: await options.factory() }),
    teardown: async (ctx) => options.dispose?.(ctx.catalog),
    timeout: options.timeout,
  });
}
