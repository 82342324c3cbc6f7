import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Qcow2VolumeDriver } from '../src/index.js';
import { patternBytes } from '@cairn/conformance';

export const MiB = 1024 * 1024;

/** True when `program` runs (`--version`). */
export function has(program: string): boolean {
  try {
    execFileSync(program, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Missing qemu programs: a test file skips with this reason outside CI (a skip fails under CI=true). */
export const missingQemu = ['qemu-img', 'qemu-storage-daemon'].filter((p) => !has(p));

export async function tempDir(prefix = 'cairn-qcow2-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** A driver on a fresh temp directory. */
export async function freshDriver(): Promise<Qcow2VolumeDriver> {
  return new Qcow2VolumeDriver({ directory: await tempDir() });
}

/**
 * Two driver instances on one fresh directory, as two processes would be (each starts its own
 * daemon). The directory is added to `dirs`, which the caller removes after its tests.
 */
export async function driverPair(dirs: string[]): Promise<[Qcow2VolumeDriver, Qcow2VolumeDriver]> {
  const directory = await tempDir();
  dirs.push(directory);
  return [new Qcow2VolumeDriver({ directory }), new Qcow2VolumeDriver({ directory })];
}

/** A volume's sidecar record, as the driver last wrote it. */
export async function readSidecar(d: Qcow2VolumeDriver, volumeId: string): Promise<{ size: number; checkpoints: Array<{ consistent: boolean }> }> {
  return JSON.parse(await readFile(join(d.directory, 'volumes', `${volumeId}.json`), 'utf8'));
}

/** Closes the driver (stopping its daemon) and removes its directory. */
export async function disposeDriver(driver: Qcow2VolumeDriver): Promise<void> {
  await driver.close();
  await rm(driver.directory, { recursive: true, force: true });
}

/** Runs qemu-img and returns its exit status and output (never throws). */
export function qemuImg(args: string[]): { status: number; stdout: string; stderr: string } {
  try {
    const stdout = execFileSync('qemu-img', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
    return { status: 0, stdout, stderr: '' };
  } catch (err) {
    const e = err as { status?: number; stdout?: Buffer; stderr?: Buffer };
    return { status: e.status ?? -1, stdout: String(e.stdout ?? ''), stderr: String(e.stderr ?? '') };
  }
}

/** Deterministic pseudo-random bytes: the conformance suite's generator. */
export const pattern = patternBytes;

/** Half data, half zeros, in 1 MiB runs: what a real disk looks like to a sparse copy. */
export function halfSparse(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  for (let at = 0; at < size; at += 2 * MiB) pattern(Math.min(MiB, size - at), seed + at).copy(out, at);
  return out;
}

/** Every overlay file under `<directory>/views/` (each instance's directory included), sorted. */
export async function overlaysIn(directory: string): Promise<string[]> {
  const names = await readdir(join(directory, 'views'), { recursive: true }).catch(() => [] as string[]);
  return names.filter((n) => n.endsWith('.qcow2')).sort();
}
