/**
 * Supervises one `qemu-storage-daemon` process with a QMP monitor on a unix socket in its own
 * temp dir (`/tmp/cairn-qsd-XXXXXX/qmp.sock`, well under the 108-byte limit; `cairn-qsk-XXXXXX`
 * with `keepDir`).
 *
 * Contracts:
 * - `start` resolves once QMP answered the handshake, or throws UNAVAILABLE (binary missing,
 *   daemon exited, no QMP in time) with the daemon's stderr in the message and `details.log` (the
 *   log's last 1 MiB),
 *   and, when the daemon was still there, its process state (`details.processState`, e.g.
 *   `stopped (T)`); INVALID_INPUT when the socket path would be 108 bytes or longer, or for an
 *   argument or binary name node cannot pass (a NUL byte); the code of the system error
 *   (NOT_FOUND, UNAVAILABLE, …) when the temp dir or its log cannot be made under `tmpParent`.
 *   A start refused before anything ran leaves no temp dir behind. A
 *   connection that gets no greeting within 2 s is dropped and made again until the deadline
 *   (`startTimeoutMs`, on a monotonic clock), then one last attempt gets its full 2 s: a daemon
 *   ready by the deadline is connected even when this process was held up past it.
 * - `stop` asks `quit`, waits, then SIGTERM, then SIGKILL; it resolves with the exit status.
 *   Idempotent. Every wait is bounded: a daemon that has not exited `killTimeoutMs` after its
 *   SIGKILL (stuck in uninterruptible I/O: a hung disk, NFS or FUSE server; SIGKILL takes effect
 *   only when that I/O ends) fails it UNAVAILABLE `left behind`, with details.pid,
 *   details.processState and details.leftBehind: true; its temp dir is removed once it exits,
 *   and a later `stop` or `kill` waits for that exit again, bounded the same way. Such a process
 *   no longer keeps this one alive (its child handle is unref'd): a caller may exit meanwhile,
 *   leaving it to the kernel (and its temp dir to a later start's sweep). A failed
 *   `start` bounds its wait after its SIGKILL the same way (5 000 ms). A clean `quit` is what
 *   makes qemu write persistent bitmaps to qcow2 files; when the QMP client is already closed,
 *   `stop` sends SIGTERM at once (the same clean quit). A program that cannot be run (missing, not executable) is UNAVAILABLE `cannot run …`.
 * - `kill` (SIGKILL by default) sends its signal at once, also while a `stop` is under way (a
 *   stop waiting on a wedged daemon is when it is needed), and resolves with the exit status, as
 *   that stop then does; its wait after a SIGKILL is bounded as `stop`'s. It simulates a crash;
 *   the QMP client then fails every pending and later call with UNAVAILABLE.
 * - Timeouts (`startTimeoutMs`, `commandTimeoutMs`, `quitTimeoutMs`, `termTimeoutMs`,
 *   `killTimeoutMs`) are ms from 0 to 2^31 - 1 (`commandTimeoutMs` may be `Infinity`); NaN, a
 *   negative or a longer one is INVALID_INPUT, before anything is spawned or sent.
 * - One instance is one process: to restart, `start` a new instance on the same images.
 * - The temp dir (socket, log) is removed after exit unless `keepDir`, however the daemon ended
 *   (also when it died on its own, before `whenExited` resolves); a kept dir stays, also
 *   after this process exits (the stale-dir sweep below leaves it alone). Daemons still running
 *   when the Node process exits normally get SIGTERM (a clean quit) and the exit waits for them,
 *   at most 3 s, then SIGKILLs any left (exit-hook.ts).
 * - The daemon does not outlive this process: on Linux it gets SIGTERM (a clean quit) when this
 *   process dies in any way, even SIGKILL (parent-death.ts). It then runs in a process group of
 *   its own, so a terminal's Ctrl-C (SIGINT to the foreground group) reaches only this process, which
 *   decides how to stop the daemon. `start` first removes the temp
 *   dirs left under `tmpParent` by owners that are gone and whose sockets are dead (a daemon of
 *   another pid namespace is judged by its sockets), except dirs kept with `keepDir`, and
 *   owner-less ones quiet for 10 minutes with no live socket (rules in runtime-dirs.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CairnError, onDeadline, toCairnError } from '@cairn/core';
import { endAtExit } from './exit-hook.js';
import { readTail } from './log-tail.js';
import { tiedToParent } from './parent-death.js';
import { MAX_UNIX_SOCKET_PATH_BYTES, QmpClient } from './qmp-client.js';
import { unavailable } from './qmp-errors.js';
import { processState } from './process-state.js';
import { DIR_PREFIX, KEPT_DIR_PREFIX, QMP_SOCKET_NAME, removeStaleDirs, writeOwner } from './runtime-dirs.js';
import { checkTimeoutMs } from './timeouts.js';

export interface QemuStorageDaemonOptions {
  /** Extra arguments, e.g. `['--blockdev', 'driver=file,node-name=f0,filename=/x.qcow2']`. Default none. */
  args?: string[];
  /** Program to run. Default `qemu-storage-daemon` (from PATH). */
  binary?: string;
  /**
   * Budget from spawn (monotonic clock) for connection attempts, 10 ms apart, each cut at it; then
   * one last attempt with the whole 2 s handshake bound, so `start` gives up at most about 2 s
   * after it (0: that one attempt only). Default 10 000 ms.
   */
  startTimeoutMs?: number;
  /** Parent of the temp dir. Default `/tmp`. */
  tmpParent?: string;
  /**
   * Keep the temp dir (socket, `daemon.log`) after the daemon exits, e.g. to read the log after a
   * failure; the caller removes it. Named `cairn-qsk-XXXXXX` (not `cairn-qsd-`), so it is never
   * removed as stale by later starts, even when its owner file could not be written. Default false.
   */
  keepDir?: boolean;
  /** Name used in error messages. Default `qemu-storage-daemon`. */
  driver?: string;
  /** Default `timeoutMs` of the QMP client's `execute`. Default 30 000 ms. */
  commandTimeoutMs?: number;
}

export interface StopOptions {
  /** Wait this long for the `quit` reply and the exit, from the `stop()` (also when `quit` is queued behind a command the daemon is stuck on), before SIGTERM. Default 5 000 ms. */
  quitTimeoutMs?: number;
  /** Wait this long after SIGTERM, before SIGKILL. Default 3 000 ms. */
  termTimeoutMs?: number;
  /**
   * Wait this long for the exit after SIGKILL, then give up: UNAVAILABLE, the process left behind
   * (see the file comment). Default 5 000 ms.
   */
  killTimeoutMs?: number;
}

/** Default `killTimeoutMs`; also the bound of a failed start's wait after its SIGKILL. */
const DEFAULT_KILL_TIMEOUT_MS = 5_000;

/**
 * Resolves true once `exited` resolves, false when `ms` passed first (`ms` from 0 to 2^31 - 1).
 * `exited` must resolve from the child's 'exit' (or 'error') event itself, nothing later: an exit
 * received by the deadline wins, also after this process's event loop was held up past it (core's
 * onDeadline: the event is read in the poll phase, before the deadline fires), so a daemon that
 * has exited is never taken for one still running and sent a signal. Leaves no timer.
 */
function exitsWithinMs(exited: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const cancel = onDeadline(ms, () => resolve(false));
    void exited.then(() => {
      cancel();
      resolve(true);
    });
  });
}

/**
 * Resolves with the exit once `exited` (the child's 'exit' event, as exitsWithinMs) resolves, or
 * with undefined when `sigkilled` has resolved and `ms` more passed without it: the process is
 * stuck (uninterruptible I/O). Leaves no timer.
 */
async function exitAfterKill(exited: Promise<DaemonExit>, sigkilled: Promise<void>, ms: number): Promise<DaemonExit | undefined> {
  const killedFirst = await Promise.race([exited.then(() => false), sigkilled.then(() => true)]);
  if (killedFirst && !(await exitsWithinMs(exited, ms))) return undefined;
  return exited;
}

/** The UNAVAILABLE for a daemon still there `ms` after its SIGKILL: `why` it was killed, then what is left behind. */
function leftBehind(why: string, pid: number | undefined, ms: number, driver: string, details: Record<string, unknown> = {}): CairnError {
  const state = processState(pid);
  const message = `${why}daemon process ${pid} did not exit within ${ms} ms of SIGKILL${state ? ` (it is ${state})` : ''}; it is left behind until the I/O it waits for ends`;
  return unavailable(message, driver, undefined, { ...details, pid, leftBehind: true, ...(state ? { processState: state } : {}) });
}

/** How the daemon ended: exit code, or the signal that killed it. */
export interface DaemonExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const DRIVER = 'qemu-storage-daemon';
/** How long one start attempt waits for the greeting and `qmp_capabilities` before connecting again. */
const HANDSHAKE_ATTEMPT_MS = 2_000;

/** The QMP socket's name in the daemon's temp dir. */
const SOCKET_NAME = QMP_SOCKET_NAME;
/** Milliseconds on a monotonic clock, for the start and stop budgets (the wall clock may step). */
const now = (): number => performance.now();
/** Characters mkdtemp appends to DIR_PREFIX. */
const MKDTEMP_SUFFIX = 'XXXXXX';

/**
 * Checks that a daemon's temp dir under `tmpParent` can hold unix sockets: the path of a socket
 * named at most `socketNameBytes` long (default: the QMP socket's) in a `cairn-qsd-XXXXXX`
 * directory under it must fit MAX_UNIX_SOCKET_PATH_BYTES. `INVALID_INPUT` otherwise, naming
 * `option` (the caller's name for `tmpParent`), with details.directory, pathBytes and maxBytes,
 * before anything is created. A caller that takes `tmpParent` from its config calls it when it is
 * configured, so that a too-deep directory is refused before any work starts.
 */
export function assertTmpParentFits(tmpParent: string, driver: string, option = 'tmpParent', socketNameBytes = SOCKET_NAME.length): void {
  const longest = Buffer.byteLength(join(tmpParent, DIR_PREFIX + MKDTEMP_SUFFIX, 'x'.repeat(socketNameBytes)));
  if (longest <= MAX_UNIX_SOCKET_PATH_BYTES) return;
  const message = `${option} ${tmpParent} is too deep for the daemon's unix sockets: their paths would be ${longest} bytes, at most ${MAX_UNIX_SOCKET_PATH_BYTES} work; give a shorter one`;
  throw new CairnError('INVALID_INPUT', message, { driver, details: { directory: tmpParent, pathBytes: longest, maxBytes: MAX_UNIX_SOCKET_PATH_BYTES } });
}

/** Escapes a value for qemu's `key=value,...` option syntax (a comma is doubled). */
const optValue = (value: string): string => value.replaceAll(',', ',,');

/**
 * Most of the log kept in memory when the temp dir is removed, for `readLog()` (its last 1 MiB),
 * and put in a failed start's error. Only that tail is read: the log itself is not bounded (the
 * daemon appends to it for as long as it runs), so it may be far larger than a string can hold.
 */
const KEPT_LOG_BYTES = 1024 * 1024;

/**
 * Spawns `command` with stdout and stderr appended to `logPath`. Throws what opening the log or
 * node's spawn throws synchronously (an argument it cannot pass); a program that cannot be run
 * is reported later, as the child's 'error' event or setpriv's exit status.
 */
function spawnLogged(command: { file: string; args: string[]; tied: boolean }, logPath: string): ChildProcess {
  const logFd = openSync(logPath, 'a');
  try {
    // `detached`: a session and process group of its own, so the SIGINT a terminal's Ctrl-C sends
    // to its whole foreground group reaches this process (whose handler may still need QMP to
    // cancel cleanly) and not the daemon, which would quit on it. Only when parent death ends the
    // daemon (`tied`): otherwise that Ctrl-C is what stops it should this process die of it.
    return spawn(command.file, command.args, { stdio: ['ignore', logFd, logFd], detached: command.tied });
  } finally {
    closeSync(logFd);
  }
}

/** The CairnError for a synchronous spawn failure: INVALID_INPUT for an argument node cannot pass (a NUL byte), else by its system error. */
function spawnRefusal(err: unknown, binary: string, driver: string): CairnError {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('ERR_INVALID_ARG')) {
    return new CairnError('INVALID_INPUT', `cannot run ${binary}: ${(err as Error).message}`, { driver, cause: err });
  }
  return toCairnError(err, driver, `cannot run ${binary}`);
}

export class QemuStorageDaemon {
  private stopping: Promise<DaemonExit> | undefined;
  /** Resolves once SIGKILL was sent, by `stop` or `kill`: from then on waits for the exit are bounded. */
  private readonly sigkilled: Promise<void>;
  private markSigkilled!: () => void;
  private sigkillSent = false;
  private exitStatus: DaemonExit | undefined;
  /** The log as it was when the temp dir was removed (its last KEPT_LOG_BYTES). */
  private keptLog: string | undefined;
  /**
   * Resolves when the process has exited and, unless `keepDir`, its temp dir was removed: however
   * it ended (stop(), kill(), or on its own: a crash, a signal from elsewhere), so a dead daemon
   * leaves no dir for a later start() to sweep. Only this instance's own dir is removed (every
   * start() makes a fresh one), so a restart racing this cleanup is not affected. Never rejects.
   */
  readonly whenExited: Promise<DaemonExit>;

  private constructor(
    private readonly child: ChildProcess,
    /** The temp dir holding the socket and the log. */
    readonly dir: string,
    /** The QMP unix socket. */
    readonly socketPath: string,
    /** stdout and stderr of the daemon. */
    readonly logPath: string,
    /** Resolves when the process has exited: at its 'exit' (or 'error') event, which the waits for it take as the exit. */
    private readonly exited: Promise<DaemonExit>,
    private readonly keepDir: boolean,
    readonly driver: string,
    /** The connected QMP client; closed once the daemon exits. */
    readonly qmp: QmpClient,
  ) {
    this.sigkilled = new Promise((resolve) => (this.markSigkilled = resolve));
    this.whenExited = exited.then(async (exit) => {
      this.exitStatus = exit;
      await this.removeDir();
      return exit;
    });
  }

  /** Removes the temp dir unless `keepDir`, keeping the log's tail for `readLog()`. Never throws. */
  private async removeDir(): Promise<void> {
    if (this.keepDir) return;
    this.keptLog = await readTail(this.logPath, KEPT_LOG_BYTES).catch(() => '');
    await rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }

  /** Spawns the daemon and connects QMP (see the file comment for errors). */
  static async start(options: QemuStorageDaemonOptions = {}): Promise<QemuStorageDaemon> {
    const driver = options.driver ?? DRIVER;
    checkTimeoutMs('startTimeoutMs', options.startTimeoutMs, driver);
    checkTimeoutMs('commandTimeoutMs', options.commandTimeoutMs, driver, true);
    const keepDir = options.keepDir ?? false;
    const tmpParent = options.tmpParent ?? '/tmp';
    assertTmpParentFits(tmpParent, driver);
    await removeStaleDirs(tmpParent);
    // A kept dir is named apart (KEPT_DIR_PREFIX, as long): no sweep takes it, owner file or not.
    const dir = await mkdtemp(join(tmpParent, keepDir ? KEPT_DIR_PREFIX : DIR_PREFIX)).catch((err: unknown) => {
      throw toCairnError(err, driver, `cannot create the daemon's temp dir under ${tmpParent}`);
    });
    const socketPath = join(dir, SOCKET_NAME);
    const logPath = join(dir, 'daemon.log');
    const argv = [
      '--chardev',
      `socket,id=qmp0,path=${optValue(socketPath)},server=on,wait=off`,
      '--monitor',
      'chardev=qmp0',
      ...(options.args ?? []),
    ];
    const binary = options.binary ?? 'qemu-storage-daemon';
    const command = await tiedToParent(binary, argv);
    let child: ChildProcess;
    try {
      child = spawnLogged(command, logPath);
    } catch (err) {
      // Nothing runs: the dir (no owner file yet, so a later sweep would take it only after the owner-less grace) goes now.
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      throw spawnRefusal(err, binary, driver);
    }
    const startTimeoutMs = options.startTimeoutMs ?? 10_000;
    const deadline = now() + startTimeoutMs; // from the spawn, as documented
    endAtExit(child);
    let spawnError: Error | undefined;
    const whenExited = new Promise<DaemonExit>((resolve) => {
      child.once('error', (err) => {
        spawnError = err;
        resolve({ code: null, signal: null });
      });
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    let exited = false;
    void whenExited.then(() => (exited = true));
    // Only after the listeners above: an await before them could miss a quick 'exit' or 'error'.
    await writeOwner(dir, child.pid, keepDir).catch(() => undefined); // housekeeping only

    let lastError: unknown;
    for (;;) {
      if (exited) break;
      const begun = now();
      try {
        // An attempt begun before the deadline waits at most HANDSHAKE_ATTEMPT_MS and not past the
        // deadline: a connection that got no greeting is dropped and made again, so one lost
        // greeting does not use up the whole budget. The attempt begun at or after the deadline
        // (there is always one, see below) is the last and gets the whole HANDSHAKE_ATTEMPT_MS.
        const left = deadline - begun;
        const timeoutMs = left > 0 ? Math.min(HANDSHAKE_ATTEMPT_MS, Math.ceil(left)) : HANDSHAKE_ATTEMPT_MS;
        const qmp = await QmpClient.connect({ path: socketPath }, { driver, timeoutMs, commandTimeoutMs: options.commandTimeoutMs });
        return new QemuStorageDaemon(child, dir, socketPath, logPath, whenExited, keepDir, driver, qmp);
      } catch (err) {
        lastError = err;
      }
      // Give up only after an attempt begun once the budget was spent: when this process was held
      // up (a stalled event loop, not scheduled) past the deadline, a daemon ready by then still
      // gets one connection made after the hold.
      if (begun >= deadline) break;
      await sleep(10);
    }
    const state = exited ? undefined : processState(child.pid);
    if (!exited) child.kill('SIGKILL');
    const exit = await exitAfterKill(whenExited, Promise.resolve(), DEFAULT_KILL_TIMEOUT_MS);
    const log = await readTail(logPath, KEPT_LOG_BYTES).catch(() => '');
    // Also when the daemon is left behind: killed, it never runs its own code again.
    if (!keepDir) await rm(dir, { recursive: true, force: true });
    if (!exit) {
      child.unref(); // as in finish(): a process left behind does not keep this one alive
      const why = `no QMP on ${socketPath} within ${startTimeoutMs} ms${state ? ` (daemon process ${child.pid} was ${state})` : ''}; `;
      throw leftBehind(why, child.pid, DEFAULT_KILL_TIMEOUT_MS, driver, { log, args: argv });
    }
    let why = `no QMP on ${socketPath} within ${startTimeoutMs} ms${state ? ` (daemon process ${child.pid} was ${state})` : ''}`;
    if (spawnError) why = `cannot run ${binary}: ${spawnError.message}`;
    // setpriv's exec of the program failed (reason in stderr): 127 when missing, 126 otherwise (EACCES, ENOEXEC).
    else if (exited && (exit.code === 127 || exit.code === 126) && command.file !== binary) why = `cannot run ${binary}`;
    else if (exited && exit.signal !== 'SIGKILL') why = `daemon exited during startup (code ${exit.code}, signal ${exit.signal})`;
    throw unavailable(`${why}${log.trim() ? `; stderr: ${log.trim().slice(-2000)}` : ''}`, driver, spawnError ?? lastError, {
      log,
      exit,
      args: argv,
      ...(state ? { processState: state } : {}),
    });
  }

  /** The daemon's process id. */
  get pid(): number {
    return this.child.pid!;
  }

  /** The exit status once the daemon has exited, else undefined. */
  get exit(): DaemonExit | undefined {
    return this.exitStatus;
  }

  /**
   * The last 1 MiB (bytes) of the daemon's stdout and stderr so far (the log has no bound while
   * the daemon runs; a whole one past V8's string limit could not be read); once the temp dir is
   * removed, as it was then.
   */
  async readLog(): Promise<string> {
    if (this.keptLog !== undefined) return this.keptLog;
    return readTail(this.logPath, KEPT_LOG_BYTES).catch(() => this.keptLog ?? '');
  }

  /**
   * Clean shutdown: `quit`, then SIGTERM, then SIGKILL after the timeouts. Idempotent: a later
   * call (its options ignored) gets the same promise. INVALID_INPUT for a bad timeout.
   */
  stop(options: StopOptions = {}): Promise<DaemonExit> {
    try {
      checkTimeoutMs('quitTimeoutMs', options.quitTimeoutMs, this.driver);
      checkTimeoutMs('termTimeoutMs', options.termTimeoutMs, this.driver);
      checkTimeoutMs('killTimeoutMs', options.killTimeoutMs, this.driver);
    } catch (err) {
      return Promise.reject(err);
    }
    const killTimeoutMs = options.killTimeoutMs ?? DEFAULT_KILL_TIMEOUT_MS;
    this.stopping ??= this.settled(this.doStop(options.quitTimeoutMs ?? 5_000, options.termTimeoutMs ?? 3_000, killTimeoutMs));
    return this.stopping;
  }

  /** `stopping` for `run`, forgotten should it fail (a daemon left behind), so a later call waits again. */
  private settled(run: Promise<DaemonExit>): Promise<DaemonExit> {
    const stopping = run.catch((err: unknown) => {
      if (this.stopping === stopping) this.stopping = undefined;
      throw err;
    });
    return stopping;
  }

  /**
   * Sends `signal` (default SIGKILL) now, unless the daemon has exited, and resolves with the exit
   * status once it exited. While a `stop` is under way the signal is sent all the same and that
   * stop resolves with the same status. Use for crash tests, or when a `stop` hangs. After a
   * SIGKILL the wait is bounded (`killTimeoutMs`, default 5 000 ms; UNAVAILABLE left behind, as
   * `stop`); after another signal it lasts until the exit or a SIGKILL's bound.
   */
  kill(signal: 'SIGKILL' | 'SIGTERM' | 'SIGINT' = 'SIGKILL', options: Pick<StopOptions, 'killTimeoutMs'> = {}): Promise<DaemonExit> {
    try {
      checkTimeoutMs('killTimeoutMs', options.killTimeoutMs, this.driver);
    } catch (err) {
      return Promise.reject(err);
    }
    if (!this.exitStatus) this.send(signal);
    this.stopping ??= this.settled(this.finish(options.killTimeoutMs ?? DEFAULT_KILL_TIMEOUT_MS));
    return this.stopping;
  }

  /** Sends `signal`, noting a SIGKILL (sigkilled). */
  private send(signal: NodeJS.Signals): void {
    this.child.kill(signal);
    if (signal !== 'SIGKILL') return;
    this.sigkillSent = true;
    this.markSigkilled();
  }

  /** Sends any signal without waiting (e.g. SIGSTOP / SIGCONT to freeze the daemon in tests). */
  signal(signal: NodeJS.Signals): void {
    if (!this.exitStatus) this.child.kill(signal);
  }

  private async doStop(quitTimeoutMs: number, termTimeoutMs: number, killTimeoutMs: number): Promise<DaemonExit> {
    if (this.sigkillSent) return this.finish(killTimeoutMs); // a stop again after one that left the daemon behind
    const quitDeadline = now() + quitTimeoutMs; // one budget for the reply and the exit
    // Without a QMP connection (closed by the caller, or after a protocol error) no `quit` can be
    // sent, so nothing would make the daemon exit within the quit budget: SIGTERM at once, which
    // qemu-storage-daemon handles as the same clean quit.
    const quitSent = !this.exitStatus && !this.qmp.closed;
    if (quitSent) {
      // `quit`'s own timeout counts from its turn (qmp-client.ts), which never comes while qemu is
      // stuck on a command sent before it: the stop's budget is cut from now.
      const budget = new AbortController();
      const cancelBudget = onDeadline(quitTimeoutMs, () => budget.abort());
      await this.qmp.execute('quit', undefined, { timeoutMs: quitTimeoutMs, signal: budget.signal }).catch(() => undefined);
      cancelBudget();
    }
    if (!(await this.exitsWithin(quitSent ? Math.max(0, quitDeadline - now()) : 0))) {
      this.child.kill('SIGTERM');
      if (!(await this.exitsWithin(termTimeoutMs))) this.send('SIGKILL');
    }
    return this.finish(killTimeoutMs);
  }

  /** Whether the daemon exits within `ms` (an exit already received when the time is up counts: exitsWithinMs). */
  private async exitsWithin(ms: number): Promise<boolean> {
    if (this.exitStatus) return true;
    return exitsWithinMs(this.exited, ms);
  }

  /**
   * Waits for the exit (at most `killTimeoutMs` after a SIGKILL: else UNAVAILABLE left behind),
   * closes the client, then waits for the temp dir's removal (whenExited; not counted in that
   * bound: the daemon is gone by then).
   */
  private async finish(killTimeoutMs: number): Promise<DaemonExit> {
    const exit = await exitAfterKill(this.exited, this.sigkilled, killTimeoutMs);
    if (!exit) {
      await this.qmp.close(); // killed, it never answers again: pending calls fail now
      // Its handle no longer keeps this process alive: a caller with nothing else to do (a CLI
      // run) must be able to exit, which it could not until the stuck I/O ended. Its exit, should
      // it come while this process still runs, is seen all the same (whenExited, a later stop).
      this.child.unref();
      throw leftBehind('', this.child.pid, killTimeoutMs, this.driver, { dir: this.dir });
    }
    // Let the client see the socket's EOF itself (so it records a lost connection), then close.
    const ac = new AbortController();
    await Promise.race([this.qmp.whenClosed, sleep(200, undefined, { signal: ac.signal }).catch(() => undefined)]);
    ac.abort();
    await this.qmp.close();
    await this.whenExited; // the temp dir goes with the exit
    return exit;
  }
}
