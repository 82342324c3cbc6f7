import type { Catalog } from '@cairn/core';

export interface CatalogContext {
  catalog: Catalog;
}

export interface CatalogSuiteOptions {
  /** Builds an empty catalog. */
  factory: () => Promise<Catalog>;
  dispose?: (catalog: Catalog) => Promise<void>;
  /**
   * `ifAbsent` writes are atomic against concurrent writers (a catalog over an object store: its
   * store's `atomicIfAbsent`). Without it the concurrency cases are not run.
   */
  atomicIfAbsent: boolean;
  timeout?: number;
}
