import type { BackupService } from '../contracts/backup-service.js';
import type { ObjectStore } from '../contracts/object-store.js';
import type { VolumeDriver } from '../contracts/volume-driver.js';

/** What a plugin contributes: a named factory that builds a driver from its config options. */
export interface DriverFactory<T> {
  /** Unique across the deployment within its kind; e.g. `file`, `posix`, `s3`. */
  readonly name: string;
  /** One line for `cairn plugins` and error messages. */
  readonly description: string;
  /**
   * Builds a driver from validated-by-the-factory `options`. `INVALID_INPUT` names the option
   * that is wrong. Not idempotent: each call builds a new instance.
   */
  create(options: Record<string, unknown>, context: FactoryContext): Promise<T>;
}

/** What a factory may need from the deployment around it. */
export interface FactoryContext {
  /** Builds an ObjectStore from another registered factory (for backup services over one). */
  objectStore(plugin: string, options: Record<string, unknown>): Promise<ObjectStore>;
  /** Reads a secret from `env:NAME` or `file:/path` references; never logs it. */
  secret(reference: string): Promise<string>;
}

export type VolumeDriverFactory = DriverFactory<VolumeDriver>;
export type BackupServiceFactory = DriverFactory<BackupService>;
export type ObjectStoreFactory = DriverFactory<ObjectStore>;

// A Symbol and an interface share one name (Theia's convention).
export const VolumeDriverFactory = Symbol.for('cairn.VolumeDriverFactory');
export const BackupServiceFactory = Symbol.for('cairn.BackupServiceFactory');
export const ObjectStoreFactory = Symbol.for('cairn.ObjectStoreFactory');
export const DriverRegistry = Symbol.for('cairn.DriverRegistry');
