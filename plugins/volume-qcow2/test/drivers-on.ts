import { rm } from 'node:fs/promises';
import { afterAll } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { tempDir } from './helpers.js';

/**
 * A test file's drivers: returns `driverOn(directory?)`, which opens a driver on `directory` (a
 * fresh temp directory when not given). Registers an afterAll in the calling file that closes every
 * driver it opened (ignoring failures) and then removes every directory they used.
 */
export function driversOn(): (directory?: string) => Promise<Qcow2VolumeDriver> {
  const dirs: string[] = [];
  const drivers: Qcow2VolumeDriver[] = [];
  afterAll(async () => {
    for (const d of drivers) await d.close().catch(() => {});
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });
  return async (directory?: string) => {
    const dir = directory ?? (await tempDir());
    if (!dirs.includes(dir)) dirs.push(dir);
    const d = new Qcow2VolumeDriver({ directory: dir });
    drivers.push(d);
    return d;
  };
}
