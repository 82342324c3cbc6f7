import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, statSync, readdirSync } from 'node:fs';
import { mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ObjectInfo } from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';

export const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url));
export const CHILD_SCRIPT = join(PACKAGE_DIR, 'test', 'fixtures', 'store-child.mjs');

/** A store over a fresh temporary directory. */
export async function tempStore(label = 'case'): Promise<PosixObjectStore> {
  return PosixObjectStore.open({ directory: await mkdtemp(join(tmpdir(), `cairn-posix-${label}-`)) });
}

export async function collect(it: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const o of it) out.push(o);
  return out;
}

export async function listKeys(store: PosixObjectStore, prefix = ''): Promise<string[]> {
  return (await collect(store.list(prefix))).map((o) => o.key).sort();
}

/** Every file under `dir` (relative paths), temporary files included. */
export async function allFiles(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await allFiles(dir, p)));
    else out.push(p);
  }
  return out;
}

/**
 * Child processes run the compiled package (dist/), since plain node can not load TypeScript.
 * Throws with the fix when dist is missing or older than src (`npm test` builds first).
 */
export function assertDistFresh(): void {
  // tsc -b may leave an unchanged output alone and only touch its build info.
  const info = join(PACKAGE_DIR, 'dist', '.tsbuildinfo');
  const built = existsSync(info) ? statSync(info).mtimeMs : 0;
  for (const f of readdirSync(join(PACKAGE_DIR, 'src')).filter((n) => n.endsWith('.ts'))) {
    const out = join(PACKAGE_DIR, 'dist', f.replace(/\.ts$/, '.js'));
    if (!existsSync(out) || statSync(join(PACKAGE_DIR, 'src', f)).mtimeMs > Math.max(built, statSync(out).mtimeMs) + 1) {
      throw new Error(`plugins/backup-posix/dist is missing or older than src/${f}: run \`npx tsc -b plugins/backup-posix\``);
    }
  }
}

export interface Child {
  proc: ChildProcess;
  /** Lines the child printed, parsed as JSON. */
  lines: Record<string, unknown>[];
  /** Resolves with the first line whose `event` is `name`. */
  waitFor(name: string): Promise<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `script` (default fixtures/store-child.mjs) with one JSON argument; it prints one JSON object per line. */
export function spawnChild(args: Record<string, unknown>, script = CHILD_SCRIPT): Child {
  const proc = spawn(process.execPath, [script, JSON.stringify(args)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: Record<string, unknown>[] = [];
  const waiters: { name: string; resolve: (l: Record<string, unknown>) => void }[] = [];
  let buffered = '';
  proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>;
      buffered = buffered.slice(nl + 1);
      lines.push(line);
      for (const w of waiters.filter((w) => w.name === line.event)) w.resolve(line);
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    proc,
    lines,
    exited,
    waitFor: (name) =>
      new Promise((resolve, reject) => {
        const found = lines.find((l) => l.event === name);
        if (found) return resolve(found);
        waiters.push({ name, resolve });
        void exited.then((e) => reject(new Error(`child exited (${JSON.stringify(e)}) before "${name}"`)));
      }),
  };
}
