import type { Catalog } from '@cairn/core';

export interface CatalogContext {
  catalog: Catalog;
  /** A second instance over the same records, as another process opens them (see `sibling`). */
  sibling?: Catalog;
}

export interface CatalogSuiteOptions {
  /** Builds an empty catalog. */
  factory: () => Promise<Catalog>;
  dispose?: (catalog: Catalog) => Promise<void>;
  /**
   * Opens another instance over `catalog`'s records, sharing nothing in memory with it, as
   * another process would (a catalog kept in one process's memory has none). The section cases
   * then also run across the two instances.
   */
  sibling?: (catalog: Catalog) => Promise<Catalog>;
  /**
   * `ifAbsent` writes are atomic against concurrent writers (a catalog over an object store: its
   * store's `atomicIfAbsent`). Without it the concurrency cases are not run.
   */
  atomicIfAbsent: boolean;
  timeout?: number;
}
