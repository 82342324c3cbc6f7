import type { Group } from '../harness.js';
import { registerGroups } from '../harness.js';
import { catalogConcurrency, catalogConditionalWrites, catalogSections } from './cases.js';
import type { CatalogContext, CatalogSuiteOptions } from './context.js';
import { catalogIntentConcurrency, catalogIntents } from './intent-cases.js';
import { catalogListings } from './listing-cases.js';
import { catalogPaging } from './paging-cases.js';

/** Groups for a catalog: concurrent writers only where ifAbsent is atomic. */
export function catalogGroups(options: Pick<CatalogSuiteOptions, 'atomicIfAbsent'>): Group<CatalogContext>[] {
  return [catalogConditionalWrites, catalogListings, catalogPaging, catalogSections, catalogIntents, ...(options.atomicIfAbsent ? [catalogConcurrency, catalogIntentConcurrency] : [])];
}

/** Registers the catalog suite with vitest. Each case gets an empty catalog (and its sibling, where the catalog has them). */
export function catalogSuite(title: string, options: CatalogSuiteOptions): void {
  registerGroups(title, catalogGroups(options), {
    setup: async () => {
      const catalog = await options.factory();
      return options.sibling ? { catalog, sibling: await options.sibling(catalog) } : { catalog };
    },
    teardown: async (ctx) => options.dispose?.(ctx.catalog),
    timeout: options.timeout,
  });
}
