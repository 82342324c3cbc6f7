import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll } from 'vitest';

export const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../bin/cairn.js');
export const MiB = 1024 * 1024;

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd: string;
  env?: Record<string, string | undefined>;
  input?: string;
}

/** Runs the real binary as a child process; never rejects on a non-zero exit. */
export function cairn(args: string[], options: RunOptions): Promise<CliResult> {
  return new Promise((resolvePromise) => {
    const child = execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: options.cwd, env: { ...process.env, CAIRN_CONFIG: undefined, ...options.env }, maxBuffer: 64 * MiB },
      (err, stdout, stderr) => {
        const code = err ? ((err as { code?: unknown }).code as number) : 0;
        resolvePromise({ code: typeof code === 'number' ? code : 1, stdout, stderr });
      },
    );
    child.stdin?.end(options.input ?? '');
  });
}

/** Runs a command that must succeed with `--json` and returns its parsed stdout. */
export async function cairnJson<T = any>(args: string[], options: RunOptions): Promise<T> {
  const r = await cairn([...args, '--json'], options);
  if (r.code !== 0) throw new Error(`cairn ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/**
 * The `{error}` document of a failed `--json` run: the last line of stderr (progress and
 * informational lines may come before it, e.g. from an import that ran for seconds).
 */
export function jsonError(r: CliResult): { code: string; message: string; details: Record<string, unknown> } {
  return JSON.parse(r.stderr.trim().split('\n').at(-1)!).error;
}

/** Runs the binary, killed (SIGKILL) if it runs longer than `ms`: a command that hangs fails its test (`killed`) instead of stalling the suite. */
export function cairnWithin(ms: number, args: string[], cwd: string): Promise<CliResult & { killed: boolean }> {
  return new Promise((resolvePromise) => {
    execFile(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, CAIRN_CONFIG: undefined }, timeout: ms, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number) : 0;
      resolvePromise({ code: typeof code === 'number' ? code : 1, stdout, stderr, killed: !!(err as { killed?: boolean } | null)?.killed });
    });
  });
}

/**
 * Runs the binary so that file permissions apply. As root (whom they do not stop), through
 * util-linux's `setpriv` with every capability dropped: still uid 0, so it reads the checkout
 * wherever that is (a fresh clone may sit in a directory only root may enter), but mode bits
 * apply to it as to the owner of the files these tests make. As another user, directly.
 */
export function cairnUnprivileged(args: string[], cwd: string): Promise<CliResult> {
  const [cmd, pre] = process.getuid?.() === 0 ? ['setpriv', ['--bounding-set=-all', '--inh-caps=-all', '--ambient-caps=-all', '--', process.execPath]] : [process.execPath, []];
  return new Promise((resolvePromise) => {
    execFile(cmd, [...pre, BIN, ...args], { cwd, env: { ...process.env, CAIRN_CONFIG: undefined } }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number) : 0;
      resolvePromise({ code: typeof code === 'number' ? code : 1, stdout, stderr });
    });
  });
}

/** Starts the binary in the background (for cancel tests). */
export function cairnSpawn(args: string[], options: RunOptions): { child: ChildProcess; exit: Promise<CliResult> } {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: options.cwd, env: { ...process.env, CAIRN_CONFIG: undefined, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<CliResult>((r) => child.on('close', (code) => r({ code: code ?? 1, stdout, stderr })));
  return { child, exit };
}

/** A background run of the binary (cairnUnderway) caught while under way. */
export interface RunUnderway {
  /** SIGKILLs it: no cleanup of its own runs. */
  kill(): void;
  exit: Promise<CliResult>;
}

/**
 * Starts the binary (cairnSpawn) and resolves once `underway(stderr so far)` is true, asking every
 * `everyMs` up to `tries` times (then it resolves all the same, the run still going). Rejects if
 * the run ends before then: it was never seen under way.
 */
export async function cairnUnderway(
  args: string[],
  options: RunOptions,
  underway: (stderr: string) => Promise<boolean>,
  poll: { tries: number; everyMs: number },
): Promise<RunUnderway> {
  const { child, exit } = cairnSpawn(args, options);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let settled = false;
  void exit.then(() => (settled = true));
  for (let i = 0; i < poll.tries && !settled; i++) {
    if (await underway(stderr)) break;
    await new Promise((r) => setTimeout(r, poll.everyMs));
  }
  if (settled) throw new Error(`cairn ${args.join(' ')} ended before it was seen under way: ${(await exit).stderr}`);
  return { kill: () => child.kill('SIGKILL'), exit };
}

/**
 * Writes `file`, a hook to preload with `NODE_OPTIONS=--require <file>` (killedEnv): the process
 * SIGKILLs itself at its first `fs.promises[method]` call whose path `path` matches, before the
 * call runs, as a crash at that step would leave things. Returns `file`.
 */
export async function writeKillHook(file: string, method: 'rm' | 'unlink', path: RegExp): Promise<string> {
  await writeFile(
    file,
    `const fsp = require('fs').promises;
const original = fsp.${method};
const at = new RegExp(${JSON.stringify(path.source)});
fsp.${method} = async function (...a) {
  if (at.test(String(a[0]))) process.kill(process.pid, 'SIGKILL');
  return original.apply(this, a);
};
require('module').syncBuiltinESMExports();
`,
  );
  return file;
}

/** The environment that preloads `hook` (writeKillHook) into a `cairn` run. */
export const killedEnv = (hook: string): Record<string, string> => ({ NODE_OPTIONS: `--require ${hook}` });

export async function tempDir(prefix = 'cairn-cli-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** A raw image of `size` bytes: random MiBs, text MiBs and holes, in turn. */
export async function writeRawImage(file: string, size: number): Promise<Buffer> {
  const data = Buffer.alloc(size);
  for (let off = 0, i = 0; off < size; off += MiB, i++) {
    const len = Math.min(MiB, size - off);
    if (i % 3 === 0) randomBytes(len).copy(data, off);
    else if (i % 3 === 1) data.fill(`block ${i} of a test image; `, off, off + len);
  }
  await writeFile(file, data);
  return data;
}

export async function readBytes(file: string): Promise<Buffer> {
  return readFile(file);
}

/** Every file under `dir` with its size (to show that a refused command wrote nothing). */
export async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(`${p.slice(dir.length)} ${(await stat(p)).size}`);
    }
  };
  await walk(dir);
  return out.sort();
}

/**
 * Writes `<cwd>/cairn.config.json` for the smallest deployment: the file volume driver in
 * `.cairn/volumes` and one posix target, `posix`, in `.cairn/repository` (created on first use).
 * Returns the config's path.
 */
export async function writeDeploymentConfig(cwd: string): Promise<string> {
  const config = join(cwd, 'cairn.config.json');
  await writeFile(
    config,
    JSON.stringify({
      volumeDrivers: { file: { plugin: 'file', options: { directory: '.cairn/volumes' } } },
      targets: { posix: { plugin: 'posix', options: { directory: '.cairn/repository', repository: { init: true } } } },
    }),
  );
  return config;
}

/**
 * Writes `<cwd>/cairn.config.json` for a deployment on the qcow2 volume driver (real qemu-img and
 * qemu-storage-daemon) with images in `qcow2` and daemons' runtime dirs in `run` (made here; both
 * relative, so resolved against the config's directory), and one posix target, `posix`, in `repo`.
 * Returns the config's path.
 */
export async function writeQcow2DeploymentConfig(cwd: string): Promise<string> {
  const config = join(cwd, 'cairn.config.json');
  await mkdir(join(cwd, 'run'));
  await writeFile(
    config,
    JSON.stringify({
      volumeDrivers: { qcow2: { plugin: 'qcow2', options: { directory: 'qcow2', runtimeDir: 'run' } } },
      targets: { posix: { plugin: 'posix', options: { directory: 'repo', repository: { init: true } } } },
    }),
  );
  return config;
}

/**
 * The smallest deployment (writeDeploymentConfig) in `cwd`, with volume `a` imported from a raw
 * image of `size` bytes, one full backup of it, and that backup exported as the archive `a.tar`.
 */
export async function archivedBackup(cwd: string, size: number): Promise<{ config: string; archive: string; backupId: string }> {
  const config = await writeDeploymentConfig(cwd);
  await writeRawImage(join(cwd, 'a.raw'), size);
  await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
  const backupId = (await cairnJson(['backup', 'create', 'a'], { cwd })).id as string;
  const archive = join(cwd, 'a.tar');
  await cairnJson(['backup', 'export', backupId, '--archive', archive], { cwd });
  return { config, archive, backupId };
}

/** What useArchivedBackup makes: the directory the CLI runs in, and archivedBackup's result. */
export interface ArchivedBackupFixture {
  cwd: string;
  config: string;
  archive: string;
  backupId: string;
}

/**
 * For the describe block it is called in: beforeAll makes a tempDir holding archivedBackup(size)
 * (with `deleted`, the backup is then deleted, so the archive can be imported), afterAll removes
 * the directory. The returned object's fields are set once beforeAll has run: read them in tests.
 */
export function useArchivedBackup(size: number, options: { deleted?: boolean } = {}): ArchivedBackupFixture {
  const fx: ArchivedBackupFixture = { cwd: '', config: '', archive: '', backupId: '' };
  beforeAll(async () => {
    fx.cwd = await tempDir();
    Object.assign(fx, await archivedBackup(fx.cwd, size));
    if (options.deleted) await cairnJson(['backup', 'delete', fx.backupId], { cwd: fx.cwd });
  }, 120_000);
  afterAll(() => (fx.cwd ? removeDir(fx.cwd) : undefined));
  return fx;
}

/** A running `cairn serve` (serveApi) and a small fetch client for it. */
export interface ServedApi {
  /** Base URL, from the address line serve prints. */
  url: string;
  child: ChildProcess;
  exit: Promise<CliResult>;
  /** Sends a request; `body` is sent as JSON unless it is a string (sent as is). Resolves with the status and the parsed answer (undefined when empty). */
  call(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }>;
  /** SIGTERM, then the exit. */
  stop(): Promise<CliResult>;
}

/** Starts `cairn serve --listen 127.0.0.1:0 --json …args` in `cwd` and waits for its address line. */
export async function serveApi(cwd: string, args: string[] = []): Promise<ServedApi> {
  const { child, exit } = cairnSpawn(['serve', '--listen', '127.0.0.1:0', '--json', ...args], { cwd });
  const url = await new Promise<string>((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (d: Buffer) => {
      text += d.toString();
      if (text.includes('\n')) resolve(JSON.parse(text.slice(0, text.indexOf('\n'))).listening);
    });
    void exit.then((r) => reject(new Error(`serve exited early with ${r.code}: ${r.stderr}`)));
  });
  const call: ServedApi['call'] = async (method, path, body) => {
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const res = await fetch(`${url}${path}`, { method, headers: payload === undefined ? {} : { 'content-type': 'application/json' }, body: payload });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  };
  return { url, child, exit, call, stop: () => (child.kill('SIGTERM'), exit) };
}
