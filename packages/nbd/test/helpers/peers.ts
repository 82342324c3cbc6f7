// Test helpers: temp dirs, running real peers (qemu-*, nbdinfo, nbdcopy), and raw QMP lines.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A short temp dir (unix socket paths must stay under 108 bytes). */
export async function tempDir(prefix = 'nbd-'): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion without blocking the event loop (our server may be its peer). */
export function run(cmd: string, args: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs a program and fails with its stderr unless it exits 0. */
export async function mustRun(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** A daemon started in the foreground; `stop()` kills it by PID and waits for the exit. */
export interface Daemon {
  proc: ChildProcess;
  stop: () => Promise<void>;
  log: () => string;
}

/** Spawns `cmd` and waits until every path in `ready` exists (10 s at most). */
export async function startDaemon(cmd: string, args: string[], ready: string[]): Promise<Daemon> {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const deadline = Date.now() + 10_000;
  while (!ready.every((p) => existsSync(p))) {
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`${cmd} did not start: ${output}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    proc,
    log: () => output,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

/** A few raw QMP lines over the monitor socket: `execute` resolves with the reply matched by id. */
export async function qmpConnect(path: string): Promise<{ execute: (cmd: string, args?: object) => Promise<unknown>; close: () => void }> {
  const socket = net.connect(path);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const waiters = new Map<string, (m: { return?: unknown; error?: { desc: string } }) => void>();
  let buffered = '';
  socket.on('data', (d: Buffer) => {
    buffered += d.toString();
    for (let i = buffered.indexOf('\n'); i >= 0; i = buffered.indexOf('\n')) {
      const msg = JSON.parse(buffered.slice(0, i)) as { id?: string; return?: unknown; error?: { desc: string } };
      buffered = buffered.slice(i + 1);
      if (msg.id && waiters.has(msg.id)) waiters.get(msg.id)!(msg);
    }
  });
  let n = 0;
  const execute = (cmd: string, args?: object): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const id = `t${++n}`;
      waiters.set(id, (m) => (m.error ? reject(new Error(`${cmd}: ${m.error.desc}`)) : resolve(m.return)));
      socket.write(JSON.stringify({ execute: cmd, ...(args ? { arguments: args } : {}), id }) + '\n');
    });
  await execute('qmp_capabilities');
  return { execute, close: () => socket.end() };
}

/** A deterministic pseudo-random buffer (so bytes differ per offset and per seed). */
export function pattern(length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}
