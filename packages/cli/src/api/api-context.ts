import type { BackupManager } from '@cairn/core';
import type { CliContext } from '../context.js';
import type { JobTable } from './jobs.js';

/**
 * What every route works with, built once for the server's lifetime: the CLI context (config,
 * volume driver, targets with their worker threads and open repositories), the one
 * BackupManager over them, and the table of the server's jobs. Handlers never close any of it;
 * the `serve` command does at shutdown.
 */
export interface ApiContext {
  cli: CliContext;
  manager: BackupManager;
  jobs: JobTable;
  /** The cairn version the server reports. */
  version: string;
}

/** Path of a job's resource, for `Location` headers. */
export const jobLocation = (id: string) => `/v1/jobs/${encodeURIComponent(id)}`;
/** Path of a backup's resource. */
export const backupLocation = (id: string) => `/v1/backups/${encodeURIComponent(id)}`;
