/**
 * A QMP (QEMU Machine Protocol) client over a unix socket or TCP.
 *
 * Contracts:
 * - `connect` reads the greeting, sends `qmp_capabilities`, and returns a ready client, or throws
 *   UNAVAILABLE (socket missing, refused, no greeting in time, a first message that is not a QMP
 *   greeting (greeting.ts), an error reply to `qmp_capabilities`), INVALID_INPUT (unix path ≥ 108
 *   bytes, a bad timeout; before connecting) or CANCELLED (signal).
 * - Arguments known to crash qemu 7.2, or that its JSON parser would refuse without an `id`
 *   (strings it cannot read, past its nesting, token count or size limits), are refused with
 *   INVALID_INPUT before sending (preflight.ts), as are arguments JSON cannot encode (a BigInt, a
 *   cycle) and a timeout that is NaN, negative or over 2^31 - 1 ms (timeouts.ts).
 * - Every `execute` carries a unique `id`; replies are matched by id only, never by order, so
 *   concurrent calls and interleaved events are safe. Errors follow `qmpErrorCode`.
 * - A call's timeout counts from its turn, not from its sending: qemu's monitor (without OOB) runs
 *   one command at a time in the order received, so a call waits its turn while an earlier one
 *   runs (a `blockdev-del` writing bitmaps under disk load) and would otherwise time out though
 *   the daemon is healthy. Commands are still written at once (never serialized); the deadline of
 *   the oldest unsettled call only is running, and when that call settles (answered, timed out,
 *   aborted, or failed by a closing connection) the next one's starts. A call that timed out or
 *   was aborted ends its turn at that moment although qemu may still be running it: its caller
 *   was told then, and the next call is bounded from there (so a call queued behind a command
 *   qemu is stuck on times out too, one timeout later, and the k-th behind it k timeouts later;
 *   closing the client fails them all at once). Only this client's calls are known:
 *   a command running for another QMP connection to the same qemu can still hold a call past
 *   its timeout.
 * - A call that times out fails with UNAVAILABLE, an aborted one with CANCELLED; qemu may still
 *   carry the command out, and its late reply is dropped (counted in `droppedReplies`). A reply
 *   already received when the deadline passes (this process's event loop was held up) is
 *   delivered, not timed out (core's onDeadline); so is an event a `waitForEvent` waits for, and
 *   a greeting or `qmp_capabilities` reply by the `connect` deadline.
 * - When the connection closes, every pending call fails with UNAVAILABLE, waiters reject with
 *   UNAVAILABLE, and later calls fail with UNAVAILABLE. A peer that breaks the protocol (a line
 *   that is not JSON, or not a JSON object) makes the client close itself the same way, after
 *   handling every message received before the bad line (a reply sent just before it still
 *   reaches its caller); the error names the start of the bad line. Nothing it sends can throw
 *   out of the socket handler. A closed client stays closed: there is
 *   no reconnect; call `connect` again for a new client.
 */
import net from 'node:net';
import { CairnError, onDeadline } from '@cairn/core';
import type { QmpArgs, QmpCommandName, QmpResult, TransactionAction, TransactionProperties } from './commands.js';
import { EventHub, type QmpEvent, type QmpEventListener, type WaitForEventOptions } from './events.js';
import { parseGreeting, type QmpGreeting } from './greeting.js';
import { JsonLineDecoder } from './json-lines.js';
import { assertSafeCommand } from './preflight.js';
import { QMP_DRIVER, qmpError, unavailable, type QmpErrorBody } from './qmp-errors.js';
import { receivedExcerpt } from './received.js';
import { checkTimeoutMs } from './timeouts.js';

export type { QmpGreeting } from './greeting.js';

/** Where the QMP monitor listens: a unix socket path, or a TCP host and port. */
export type QmpTarget = { path: string } | { host: string; port: number };

/** Longest unix socket path (bytes) the kernel accepts is 107 plus the terminating NUL. */
export const MAX_UNIX_SOCKET_PATH_BYTES = 107;

/** Timeouts are ms from 0 to 2^31 - 1 (`execute`'s and `waitForEvent`'s may also be `Infinity`); NaN, a negative or a longer one is INVALID_INPUT. */
export interface QmpConnectOptions {
  /** Deadline for connect + greeting + qmp_capabilities. Default 5 000 ms. */
  timeoutMs?: number;
  /** Aborting during the handshake throws CANCELLED. */
  signal?: AbortSignal;
  /** Name used in error messages. Default `qmp`. */
  driver?: string;
  /** Default `timeoutMs` of `execute` (counted from a call's turn). Default 30 000 ms; `Infinity` waits forever. */
  commandTimeoutMs?: number;
}

export interface ExecuteOptions {
  /**
   * Fail with UNAVAILABLE when no reply arrives this many ms after the call's turn (every call sent
   * before it on this client has settled; see the file comment). Default: the client's
   * `commandTimeoutMs`; `Infinity` waits forever; NaN, negative or over 2^31 - 1 is INVALID_INPUT.
   */
  timeoutMs?: number;
  /** Aborting fails the call with CANCELLED (qemu may still run the command). */
  signal?: AbortSignal;
}

type ExecuteParams<K extends QmpCommandName> = undefined extends QmpArgs<K>
  ? [args?: QmpArgs<K>, options?: ExecuteOptions]
  : [args: QmpArgs<K>, options?: ExecuteOptions];

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
  /** Starts the call's deadline: its turn at the monitor has come. Idempotent; nothing once settled. */
  startClock: () => void;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

/**
 * `err`'s message without the `[driver] ` tag a CairnError of `driver` starts with, for quoting it
 * inside another error of the same driver (which carries the tag once). Other errors, and a
 * CairnError of another driver, keep their message as it is.
 */
function untagged(err: Error, driver: string): string {
  const tag = `[${driver}] `;
  return err instanceof CairnError && err.driver === driver && err.message.startsWith(tag) ? err.message.slice(tag.length) : err.message;
}

export class QmpClient {
  private readonly hub: EventHub;
  private readonly pending = new Map<string, Pending>();
  private readonly decoder = new JsonLineDecoder();
  private seq = 0;
  private closedReason: { error: CairnError | undefined } | undefined;
  /**
   * `quit` calls sent and not yet settled, and whether one succeeded. A hang-up counts as the
   * deliberate end `quit` asked for only while one is pending or after one succeeded: a `quit`
   * that got an error reply, timed out or was aborted asked for nothing, so a later hang-up is a
   * lost connection (`whenClosed` gives the UNAVAILABLE error).
   */
  private quitsPending = 0;
  private quitSucceeded = false;
  private greetingWaiter: { resolve: (g: QmpGreeting) => void; reject: (e: unknown) => void } | undefined;
  private resolveClosed!: (error: CairnError | undefined) => void;
  private dropped = 0;
  private greetingValue: QmpGreeting | undefined;

  /**
   * Settles when the connection is gone: `undefined` for a deliberate close (close(), or a hang-up
   * while `quit` is pending or after it succeeded), the UNAVAILABLE error otherwise (also after a
   * `quit` that failed, timed out or was aborted).
   */
  readonly whenClosed: Promise<CairnError | undefined>;

  private constructor(
    private readonly socket: net.Socket,
    readonly driver: string,
    private readonly commandTimeoutMs: number,
  ) {
    this.hub = new EventHub(driver);
    this.whenClosed = new Promise((resolve) => (this.resolveClosed = resolve));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // After `quit` was sent, the peer hanging up (cleanly or with a reset) is the expected outcome.
    socket.on('error', (err) => this.hangUp(unavailable(`QMP connection failed: ${err.message}`, driver, err)));
    socket.on('close', () => this.hangUp(unavailable('QMP connection closed by the peer', driver)));
  }

  /**
   * Connects to `target` and completes the handshake (see the file comment for errors);
   * INVALID_INPUT for a bad `timeoutMs` or `commandTimeoutMs`, before connecting.
   */
  static async connect(target: QmpTarget, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const driver = options.driver ?? QMP_DRIVER;
    const { signal } = options;
    checkTimeoutMs('timeoutMs', options.timeoutMs, driver);
    checkTimeoutMs('commandTimeoutMs', options.commandTimeoutMs, driver, true);
    if ('path' in target && Buffer.byteLength(target.path) > MAX_UNIX_SOCKET_PATH_BYTES) {
      throw new CairnError('INVALID_INPUT', `unix socket path is longer than ${MAX_UNIX_SOCKET_PATH_BYTES} bytes: ${target.path}`, { driver });
    }
    if (signal?.aborted) throw new CairnError('CANCELLED', 'connect cancelled', { driver, cause: signal.reason });
    const where = 'path' in target ? target.path : `${target.host}:${target.port}`;
    const socket = 'path' in target ? net.createConnection({ path: target.path }) : net.createConnection({ host: target.host, port: target.port });
    const client = new QmpClient(socket, driver, options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS);
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    let cancelDeadline: (() => void) | undefined;
    let onAbort: (() => void) | undefined;
    const deadline = new Promise<never>((_, reject) => {
      // A greeting or reply already received when the deadline passes is handled first (onDeadline).
      cancelDeadline = onDeadline(timeoutMs, () => reject(unavailable(`no QMP handshake from ${where} within ${timeoutMs} ms`, driver)));
      onAbort = () => reject(new CairnError('CANCELLED', 'connect cancelled', { driver, cause: signal?.reason }));
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    deadline.catch(() => undefined);
    try {
      const greeting = await Promise.race([client.greetingPromise(), deadline]);
      client.greetingValue = greeting;
      await Promise.race([client.execute('qmp_capabilities', undefined, { timeoutMs: Infinity }), deadline]);
      return client;
    } catch (err) {
      client.shutdown(undefined);
      if (err instanceof CairnError && err.code === 'CANCELLED') throw err;
      // Anything else (no greeting, a peer that is not a QMP server, an error reply to
      // qmp_capabilities, a lost connection) means no usable QMP there: UNAVAILABLE.
      const cause = err instanceof CairnError && err.cause !== undefined ? err.cause : err;
      const reason = cause instanceof Error ? untagged(cause, driver) : String(cause);
      const details = err instanceof CairnError ? err.details : undefined;
      throw unavailable(`cannot open QMP at ${where}: ${reason}`, driver, cause, { ...details, target: where });
    } finally {
      cancelDeadline?.();
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }

  /** The greeting received on connect. */
  get greeting(): QmpGreeting {
    return this.greetingValue!;
  }

  /** True once the connection is gone; a closed client never reopens. */
  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /** Replies that arrived for no pending call (after a timeout or abort) and were dropped. */
  get droppedReplies(): number {
    return this.dropped;
  }

  /**
   * Sends `command` and resolves with its `return` value. Typed for the commands in
   * QmpCommandMap; any other name is sent untyped (`execute<T>('x-foo', {...})`).
   * Errors: mapped QMP error codes, UNAVAILABLE (timeout, closed), CANCELLED (signal),
   * INVALID_INPUT (a bad `timeoutMs`, or arguments refused by the preflight) before sending.
   */
  execute<K extends QmpCommandName>(command: K, ...params: ExecuteParams<K>): Promise<QmpResult<K>>;
  execute<T = unknown, C extends string = string>(
    command: C extends QmpCommandName ? never : C,
    args?: Record<string, unknown>,
    options?: ExecuteOptions,
  ): Promise<T>;
  execute(command: string, args?: unknown, options: ExecuteOptions = {}): Promise<unknown> {
    if (this.closedReason) {
      return Promise.reject(unavailable(`${command}: QMP connection is closed`, this.driver, this.closedReason.error));
    }
    const id = `cairn-${++this.seq}`;
    let line: string;
    try {
      // Encoded first: arguments JSON cannot carry (a BigInt, a cycle) are refused before any
      // state is taken (and before the preflight walks them).
      line = `${JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id })}\n`;
    } catch (err) {
      return Promise.reject(
        new CairnError('INVALID_INPUT', `${command}: arguments cannot be sent as JSON: ${(err as Error)?.message ?? String(err)}`, {
          driver: this.driver,
          cause: err,
          details: { command },
        }),
      );
    }
    try {
      checkTimeoutMs('timeoutMs', options.timeoutMs, this.driver, true);
      assertSafeCommand(command, args, line, this.driver);
    } catch (err) {
      return Promise.reject(err);
    }
    const { signal } = options;
    if (signal?.aborted) {
      return Promise.reject(new CairnError('CANCELLED', `${command} cancelled`, { driver: this.driver, cause: signal.reason }));
    }
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    const quit = command === 'quit';
    return new Promise((resolve, reject) => {
      let cancelDeadline: (() => void) | undefined;
      let settled = false;
      const settle = (): void => {
        if (!settled && quit) this.quitsPending--;
        settled = true;
        this.pending.delete(id);
        cancelDeadline?.();
        signal?.removeEventListener('abort', onAbort);
        this.startHeadClock(); // the next call's turn, if this one was the oldest
      };
      const onAbort = (): void => {
        settle();
        reject(new CairnError('CANCELLED', `${command} cancelled`, { driver: this.driver, cause: signal?.reason }));
      };
      const startClock = (): void => {
        if (settled || cancelDeadline || !Number.isFinite(timeoutMs)) return;
        // A reply already received when the deadline passes still wins (core's onDeadline).
        cancelDeadline = onDeadline(timeoutMs, () => {
          settle();
          reject(unavailable(`${command}: no reply within ${timeoutMs} ms of its turn at the monitor`, this.driver, undefined, { command, timeoutMs }));
        });
      };
      this.pending.set(id, {
        command,
        resolve: (value) => {
          settle();
          if (quit) this.quitSucceeded = true;
          resolve(value);
        },
        reject: (error) => {
          settle();
          reject(error);
        },
        startClock,
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      if (quit) this.quitsPending++;
      this.socket.write(line);
      this.startHeadClock(); // at once when no call sent before this one is still unsettled
    });
  }

  /**
   * Starts the deadline of the oldest unsettled call (`pending` keeps send order), if not yet
   * started: qemu's monitor (no OOB) runs one command at a time in the order received, so a call
   * gets its turn when every call sent before it has settled (see the file comment).
   */
  private startHeadClock(): void {
    if (this.closedReason) return;
    this.pending.values().next().value?.startClock();
  }

  /** Runs `actions` atomically with the `transaction` command: all apply, or none does. */
  transaction(actions: TransactionAction[], options: ExecuteOptions & { properties?: TransactionProperties } = {}): Promise<void> {
    const { properties, ...rest } = options;
    const args = properties ? { actions, properties } : { actions };
    return this.execute('transaction', args, rest).then(() => undefined);
  }

  /** Calls `fn` for each event named `name` (`'*'`: every event) from now on. Returns an unsubscribe function. */
  on<N extends string>(name: N, fn: QmpEventListener<N>): () => void {
    return this.hub.on(name, fn as QmpEventListener);
  }

  /** Removes a listener added with `on`. Idempotent. */
  off<N extends string>(name: N, fn: QmpEventListener<N>): void {
    this.hub.off(name, fn as QmpEventListener);
  }

  /** Async iterator over events (optionally only `names`), buffered from this call on; see EventHub.iterate. */
  events(options: { names?: readonly string[]; signal?: AbortSignal } = {}): AsyncIterableIterator<QmpEvent> {
    return this.hub.iterate(options.names, options.signal);
  }

  /** Same as `events()`. */
  [Symbol.asyncIterator](): AsyncIterableIterator<QmpEvent> {
    return this.events();
  }

  /**
   * Resolves with the first `name` event (matching `predicate`) that arrives after this call.
   * Create it before the `execute` that triggers the event, or in the same synchronous run
   * right after it with `after` set to that `execute`: the timeout then counts from its reply
   * (a command queued behind a slow one gets its turn late). Rejects UNAVAILABLE on timeout
   * (default 30 000 ms) or close, CANCELLED on abort, `after`'s error when it rejects first.
   */
  waitForEvent<N extends string>(name: N, predicate?: (event: QmpEvent<N>) => boolean, options?: WaitForEventOptions): Promise<QmpEvent<N>> {
    return this.hub.wait(name, predicate as ((event: QmpEvent) => boolean) | undefined, options) as Promise<QmpEvent<N>>;
  }

  /** Closes the connection. Pending calls fail with UNAVAILABLE; iterators end. Idempotent. */
  async close(): Promise<void> {
    this.shutdown(undefined);
    await this.whenClosed;
  }

  private greetingPromise(): Promise<QmpGreeting> {
    return new Promise((resolve, reject) => (this.greetingWaiter = { resolve, reject }));
  }

  /**
   * Handles a chunk: every complete message in it is handled in order, so a reply that arrived
   * before a line breaking the protocol still reaches its caller; then the break closes the
   * client (UNAVAILABLE for the calls still pending, naming the start of the bad line).
   */
  private onData(chunk: Buffer): void {
    const { messages, failure } = this.decoder.push(chunk);
    for (const message of messages) {
      if (this.closedReason) return;
      if (typeof message !== 'object' || message === null || Array.isArray(message)) {
        const received = receivedExcerpt(message);
        this.shutdown(unavailable(`QMP peer sent a message that is not a JSON object: ${received}`, this.driver, undefined, { received }));
        return;
      }
      try {
        this.dispatch(message as Record<string, unknown>);
      } catch (err) {
        // Nothing thrown while handling one message may escape the socket's data handler (it would crash the process).
        this.shutdown(unavailable(`QMP message could not be handled: ${(err as Error)?.message ?? String(err)}`, this.driver, err));
        return;
      }
    }
    if (failure) {
      const message = `QMP stream is not valid JSON lines: ${failure.error.message}; line: ${failure.line}`;
      this.shutdown(unavailable(message, this.driver, failure.error, { received: failure.line }));
    }
  }

  private dispatch(msg: Record<string, unknown>): void {
    if (this.greetingWaiter) {
      const waiter = this.greetingWaiter;
      this.greetingWaiter = undefined;
      const greeting = parseGreeting(msg);
      if (greeting) waiter.resolve(greeting);
      else {
        const received = receivedExcerpt(msg);
        waiter.reject(unavailable(`not a QMP greeting: ${received}`, this.driver, undefined, { received }));
      }
      return;
    }
    if (typeof msg?.event === 'string') {
      this.hub.emit(msg as unknown as QmpEvent);
      return;
    }
    if (!('return' in msg) && !('error' in msg)) return;
    const pending = typeof msg.id === 'string' ? this.pending.get(msg.id) : undefined;
    if (!pending) {
      this.dropped++;
      return;
    }
    if ('error' in msg) pending.reject(qmpError(pending.command, msg.error as QmpErrorBody, this.driver));
    else pending.resolve(msg.return);
  }

  /**
   * The peer hung up. While a `quit` is pending, or after one succeeded, that is the expected
   * outcome: a pending `quit` succeeds and the close counts as deliberate. Otherwise (no `quit`,
   * or only ones that failed, timed out or were aborted) it is a lost connection.
   */
  private hangUp(error: CairnError): void {
    if (this.closedReason) return;
    if (this.quitsPending === 0 && !this.quitSucceeded) return this.shutdown(error);
    for (const p of [...this.pending.values()]) if (p.command === 'quit') p.resolve({});
    this.shutdown(undefined);
  }

  /** Marks the client closed (once): fails pending calls and waiters, ends iterators. */
  private shutdown(error: CairnError | undefined): void {
    if (this.closedReason) return;
    this.closedReason = { error };
    const why = error ? 'QMP connection lost' : 'QMP client closed';
    this.greetingWaiter?.reject(error ?? unavailable(why, this.driver));
    this.greetingWaiter = undefined;
    for (const p of [...this.pending.values()]) p.reject(unavailable(`${p.command}: ${why}`, this.driver, error));
    this.pending.clear();
    this.hub.close(error);
    this.socket.destroy();
    this.resolveClosed(error);
  }
}
