import type { ObjectStore, ObjectStoreCapabilities } from '@cairn/core';

export interface ObjectStoreContext {
  store: ObjectStore;
  /** A prefix unique to this case, so cases never see each other's objects on shared peers. */
  prefix: string;
  /** Keys in the list-by-prefix case. */
  listKeys?: number;
  /** ObjectStoreSuiteOptions.plantForeign. */
  plantForeign?: (store: ObjectStore, key: string) => Promise<void>;
}

export interface ObjectStoreSuiteOptions {
  /** Builds a store; the suite writes only under a per-case prefix. */
  factory: () => Promise<ObjectStore>;
  dispose?: (store: ObjectStore) => Promise<void>;
  capabilities: ObjectStoreCapabilities;
  /** Number of keys in the list-by-prefix case. Default 1100 (more than one S3/Swift page). */
  listKeys?: number;
  /**
   * For a store that can hold something at a key's place that is no object (posix: a FIFO or a
   * symbolic link where the key's file would be): puts one there for the valid, absent `key`.
   * Given, the suite checks that every call agrees the key holds no object (foreign-entries.ts).
   * Default: none, and those cases are not run (an object store without such places).
   */
  plantForeign?: (store: ObjectStore, key: string) => Promise<void>;
  beforeAll?: () => Promise<void>;
  afterAll?: () => Promise<void>;
  timeout?: number;
}
