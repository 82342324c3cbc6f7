import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, expect } from 'vitest';
import type { StampClock } from '@cairn/core';
import { patternBytes } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';

export async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'cairn-volume-file-'));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** The current test's directory, as set up by dirPerTest. */
export interface TestDir {
  /** A fresh temp directory, removed after the test. */
  readonly dir: string;
}

/** The current test's directory and driver, as set up by driverPerTest. */
export interface TestDriver extends TestDir {
  /** A FileVolumeDriver on `dir`. */
  readonly driver: FileVolumeDriver;
}

/**
 * Registers hooks in the calling describe block: before each test, a fresh temp directory (read
 * through the returned object's field); after each test, the directory removed. Hooks the block
 * registers after this call run after the directory is made, and their after-hooks before it is
 * removed (vitest runs after-hooks in reverse order).
 */
export function dirPerTest(): TestDir {
  const current = {} as { dir: string };
  beforeEach(async () => {
    current.dir = await tempDir();
  });
  afterEach(async () => removeDir(current.dir));
  return current;
}

/**
 * Registers hooks in the calling describe block: before each test, a fresh temp directory and a
 * driver on it (read through the returned object's fields); after each test, the directory removed
 * (as dirPerTest).
 */
export function driverPerTest(): TestDriver {
  const current = dirPerTest() as { dir: string; driver: FileVolumeDriver };
  beforeEach(() => {
    current.driver = new FileVolumeDriver({ directory: current.dir });
  });
  return current;
}

/** Makes `d` read image stamps and the time through `clock` from now on. */
export function useClock(d: FileVolumeDriver, clock: StampClock): void {
  (d as unknown as { ctx: { clock: StampClock } }).ctx.clock = clock;
}

/**
 * Makes the driver's next volume sidecar write fail: `landed` false as a full disk would (nothing
 * written), true as a failed fsync of the directory after the rename would (the new sidecar is in
 * place, but the call fails).
 */
export function failNextVolumeSidecarWrite(d: FileVolumeDriver, landed: boolean): void {
  type Put = (r: { kind: string }) => Promise<void>;
  const store = (d as unknown as { ctx: { store: { put: Put } } }).ctx.store;
  const put = store.put.bind(store);
  let armed = true;
  store.put = async (r) => {
    if (!armed || r.kind !== 'volume') return put(r);
    armed = false;
    if (landed) await put(r);
    throw Object.assign(new Error(landed ? 'EIO: i/o error, fsync' : 'ENOSPC: no space left on device, write'), { code: landed ? 'EIO' : 'ENOSPC' });
  };
}

const fixture = fileURLToPath(new URL('./fixtures/hold-attachment.mjs', import.meta.url));
const built = fileURLToPath(new URL('../dist/index.js', import.meta.url));

export interface Holder {
  child: ChildProcessWithoutNullStreams;
  /** Resolves with the child's first line: `attached` or `error <CODE>`. */
  ready: Promise<string>;
  /** Closes the child's stdin (clean detach) and waits for it to exit. */
  stop(): Promise<number | null>;
  /** SIGKILLs the child (no detach) and waits for it to exit. */
  kill(): Promise<void>;
}

/** Spawns a second Node process that attaches `volumeId` through the built package, with `env` added to its environment. */
export function spawnHolder(directory: string, volumeId: string, mode: 'ro' | 'rw', writeOffset?: number, env: Record<string, string> = {}): Holder {
  if (!existsSync(built)) throw new Error(`${built} is missing: run \`npx tsc -b plugins/volume-file\` first`);
  const args = [fixture, directory, volumeId, mode, ...(writeOffset === undefined ? [] : [String(writeOffset)])];
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let out = '';
  const ready = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    void exited.then((code) => reject(new Error(`holder exited ${String(code)} before attaching: ${out}`)));
  });
  ready.catch(() => {});
  return {
    child,
    ready,
    stop: async () => {
      child.stdin.end();
      return exited;
    },
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Retries `fn` until it stops failing with BUSY (a killed process's locks go with its helpers), up to 5 s. */
export async function untilNotBusy<T>(fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if ((err as { code?: string }).code !== 'BUSY' || Date.now() > deadline) throw err;
      await sleep(20);
    }
  }
}

/** Spawns holders and pollers (spawnHolder, spawnPoller) that are SIGKILLed after the test if still running. */
export interface TestChildren {
  holder: typeof spawnHolder;
  poller: typeof spawnPoller;
}

/**
 * Registers an afterEach in the calling describe block that SIGKILLs the holders and pollers spawned
 * through the returned object during the test, if still running. Call it after driverPerTest: vitest
 * runs after-hooks in reverse order, so they are gone before the directory is removed.
 */
export function childrenPerTest(): TestChildren {
  let holders: Holder[] = [];
  let pollers: Poller[] = [];
  afterEach(async () => {
    for (const h of holders) if (h.child.exitCode === null && h.child.signalCode === null) await h.kill();
    for (const p of pollers) p.kill();
    holders = [];
    pollers = [];
  });
  return {
    holder: (...args) => {
      const h = spawnHolder(...args);
      holders.push(h);
      return h;
    },
    poller: (...args) => {
      const p = spawnPoller(...args);
      pollers.push(p);
      return p;
    },
  };
}

const pollFixture = fileURLToPath(new URL('./fixtures/poll-volumes.mjs', import.meta.url));

export interface Poller {
  /** Resolves once the poller has listed the volumes once. */
  polling: Promise<void>;
  /** Closes its stdin and resolves with its report: how many lists it made and how many statuses were `in-use`. */
  stop(): Promise<{ polls: number; inUse: number } | { error: string }>;
  kill(): void;
}

/**
 * Spawns a second Node process that lists the volumes of `directory` in a loop through the built
 * package (test/fixtures/poll-volumes.mjs), with `env` added to its environment.
 */
export function spawnPoller(directory: string, seed: number, env: Record<string, string> = {}): Poller {
  if (!existsSync(built)) throw new Error(`${built} is missing: run \`npx tsc -b plugins/volume-file\` first`);
  const child = spawn(process.execPath, [pollFixture, directory, String(seed)], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const polling = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.startsWith('polling\n')) resolve();
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    void exited.then(() => reject(new Error(`poller exited before polling: ${out}`)));
  });
  polling.catch(() => {});
  return {
    polling,
    stop: async () => {
      child.stdin.end();
      await exited;
      return JSON.parse(out.split('\n').find((l) => l.startsWith('{')) ?? `{"error":${JSON.stringify(out)}}`);
    },
    kill: () => child.kill('SIGKILL'),
  };
}

const deleteStalled = fileURLToPath(new URL('./fixtures/delete-stalled.mjs', import.meta.url));
const MiB = 1024 * 1024;

/** 512-byte blocks allocated to the entries of `kind`'s directory (`volumes/`, `snapshots/`) named after `id`, and their names, sorted. */
export async function leftOf(directory: string, kind: 'volume' | 'snapshot', id: string): Promise<{ names: string[]; blocks: number }> {
  const dir = join(directory, kind === 'volume' ? 'volumes' : 'snapshots');
  const names = (await readdir(dir)).filter((n) => n.startsWith(id)).sort();
  let blocks = 0;
  for (const n of names) blocks += (await stat(join(dir, n))).blocks;
  return { names, blocks };
}

/** What deleteKilledAtImage set up: the volume, the id whose deletion was killed, and one of the same kind kept. */
export interface KilledDeletion {
  volumeId: string;
  id: string;
  kept: string;
}

/**
 * Sets up a deletion of `kind` killed midway, through `t.driver` on `t.dir`: a volume of 8 MiB
 * with 4 MiB of data (patternBytes(4 MiB, `seed`)), attached read-write once (so it has a writer
 * lock) and a checkpoint; for `snapshot`, two snapshots of it, `deleted` and `kept`; for `volume`,
 * a second volume named `kept`. Then runs a deleteVolume of the first volume, or a deleteSnapshot of
 * `deleted`, in a child process (test/fixtures/delete-stalled.mjs, the built driver) and SIGKILLs
 * it right where the deletion removes the image — after `whileStalled(id)`, when given, has run
 * with the child stalled there (holding the image's lock). Asserts the files of `id` before (its
 * sidecar, image holding the 4 MiB, bitmaps) and after (the image and bitmaps still there, the
 * sidecar renamed `<id>.deleting`).
 */
export async function deleteKilledAtImage(t: TestDriver, kind: 'volume' | 'snapshot', seed: number, whileStalled?: (id: string) => Promise<void>): Promise<KilledDeletion> {
  const v = await t.driver.createVolume({ size: 8 * MiB });
  const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
  await a.device.write(0, patternBytes(4 * MiB, seed));
  await t.driver.detach(a.id);
  await t.driver.changedBlockTracking.createCheckpoint(v.id);
  const [id, kept] =
    kind === 'volume'
      ? [v.id, (await t.driver.createVolume({ size: MiB, name: 'kept' })).id]
      : [(await t.driver.createSnapshot(v.id, 'deleted')).id, (await t.driver.createSnapshot(v.id, 'kept')).id];
  const writer = kind === 'volume' ? [`${id}.writer`] : [];
  const before = await leftOf(t.dir, kind, id);
  expect(before.names).toEqual([`${id}.cbt`, `${id}.img`, `${id}.json`, ...writer]);
  expect(before.blocks).toBeGreaterThanOrEqual((4 * MiB) / 512);
  await runKilledAtImage(t.dir, kind, id, whileStalled && (() => whileStalled(id)));
  expect((await leftOf(t.dir, kind, id)).names).toEqual([`${id}.cbt`, `${id}.deleting`, `${id}.img`, ...writer]);
  return { volumeId: v.id, id, kept };
}

/** deleteKilledAtImage's child process: deletes `kind` `id`, SIGKILLed where it removes the image, after `whileStalled`. */
async function runKilledAtImage(directory: string, kind: 'volume' | 'snapshot', id: string, whileStalled?: () => Promise<void>): Promise<void> {
  const child = spawn(process.execPath, [deleteStalled, directory, kind, id], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('removing image\n')) resolve();
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    void exited.then(() => reject(new Error(`the deleting child exited before removing the image: ${out}`)));
  });
  try {
    await whileStalled?.();
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

let strace: boolean | undefined;

/** Whether strace(1) runs here (installed, and ptrace allowed). */
export function haveStrace(): boolean {
  if (strace === undefined) {
    try {
      execFileSync('strace', ['-f', '-o', '/dev/null', 'true'], { stdio: 'ignore' });
      strace = true;
    } catch {
      strace = false;
    }
  }
  return strace;
}
