import type { ObjectStore, ObjectStoreCapabilities } from '@cairn/core';

export interface ObjectStoreContext {
  store: ObjectStore;
  /** A prefix unique to this case, so cases never see each other's objects on shared peers. */
  prefix: string;
  /** Keys in the list-by-prefix case. */
  listKeys?: number;
}

export interface ObjectStoreSuiteOptions {
  /** Builds a store; the suite writes only under a per-case prefix. */
  factory: () => Promise<ObjectStore>;
  dispose?: (store: ObjectStore) => Promise<void>;
  capabilities: ObjectStoreCapabilities;
  /** Number of keys in the list-by-prefix case. Default 1100 (more than one S3/Swift page). */
  listKeys?: number;
  beforeAll?: () => Promise<void>;
  afterAll?: () => Promise<void>;
  timeout?: number;
}
