/**
 * QMP events: typed payloads and the hub that fans them out to listeners, async iterators and
 * one-shot waiters.
 *
 * Delivery contract: every subscriber sees every matching event that arrives after it was
 * registered, in wire order, and nothing from before. Registration is synchronous and socket
 * input is handled only between ticks, so a waiter created before `execute()` is sent, or in the
 * same synchronous run right after it, cannot miss an event that qemu emits before or after the
 * command's reply (qemu 7.2 sends BLOCK_EXPORT_DELETED before the reply to block-export-del).
 */
import { CairnError, onDeadline } from '@cairn/core';
import type { JobStatus, JobType } from './block-types.js';
import { QMP_DRIVER, unavailable } from './qmp-errors.js';
import { checkTimeoutMs } from './timeouts.js';

interface BlockJobEventBase {
  type: JobType;
  /** The job id. */
  device: string;
  len: number;
  offset: number;
  speed: number;
}

/** Payloads of the events Cairn uses (qemu 7.2 QAPI). */
export interface QmpEventMap {
  /** A block job finished; `error` is set when it failed. */
  BLOCK_JOB_COMPLETED: BlockJobEventBase & { error?: string };
  BLOCK_JOB_CANCELLED: BlockJobEventBase;
  BLOCK_JOB_READY: BlockJobEventBase;
  BLOCK_JOB_PENDING: { type: JobType; id: string };
  BLOCK_JOB_ERROR: { device: string; operation: 'read' | 'write'; action: 'ignore' | 'report' | 'stop' };
  /** Fires on every job state change, including jobs started inside transactions. */
  JOB_STATUS_CHANGE: { id: string; status: JobStatus };
  /** An export is gone (after block-export-del, or when its node went away). */
  BLOCK_EXPORT_DELETED: { id: string };
  SHUTDOWN: { guest: boolean; reason: string };
}

export type QmpEventName = keyof QmpEventMap;

/** Payload type of event `N`: typed for known events, a plain record otherwise. */
export type QmpEventData<N extends string> = N extends QmpEventName ? QmpEventMap[N] : Record<string, unknown>;

/** One event as received. */
export interface QmpEvent<N extends string = string> {
  event: N;
  data: QmpEventData<N>;
  timestamp: { seconds: number; microseconds: number };
}

export type QmpEventListener<N extends string = string> = (event: QmpEvent<N>) => void;

/** Options of `waitForEvent`. */
export interface WaitForEventOptions {
  /** Give up after this long with UNAVAILABLE. Default 30 000 ms; `Infinity` waits forever; NaN, negative or over 2^31 - 1 is INVALID_INPUT. */
  timeoutMs?: number;
  /** Aborting rejects with CANCELLED. */
  signal?: AbortSignal;
  /**
   * The command that triggers the event (its `execute` promise). The event is caught from the
   * call on, as always, but `timeoutMs` counts from when `after` resolves (the command's reply),
   * not from the call: the command may wait its turn at the monitor behind a slow one, and its
   * own timeout bounds that. When `after` rejects (the command failed, timed out or was aborted),
   * the wait rejects with the same error at once, unless the event came first.
   */
  after?: PromiseLike<unknown>;
}

/** Default `timeoutMs` of `waitForEvent`. */
export const DEFAULT_EVENT_TIMEOUT_MS = 30_000;

const ANY = '*';

/** Fan-out of events; owned by one QmpClient. Not part of the public API. */
export class EventHub {
  private readonly listeners = new Map<string, Set<QmpEventListener>>();
  private closedWith: { error: CairnError | undefined } | undefined;

  constructor(private readonly driver: string = QMP_DRIVER) {}

  /** Calls `fn` for each event named `name` (`'*'` for all). A throwing listener is ignored. Returns an unsubscribe function. */
  on(name: string, fn: QmpEventListener): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(fn);
    return () => this.off(name, fn);
  }

  /** Removes a listener added with `on`. Idempotent. */
  off(name: string, fn: QmpEventListener): void {
    const set = this.listeners.get(name);
    set?.delete(fn);
    if (set?.size === 0) this.listeners.delete(name);
  }

  /** Delivers `event` to the listeners of its name, then to `'*'` listeners. */
  emit(event: QmpEvent): void {
    for (const key of [event.event, ANY]) {
      const set = this.listeners.get(key);
      if (!set) continue;
      for (const fn of [...set]) {
        try {
          fn(event);
        } catch {
          // A listener's failure must not break the connection's read loop.
        }
      }
    }
  }

  /**
   * Async iterator over events (all, or those named in `names`), buffered from this call on.
   * Ends (`done`) after `close()` by the owner; after the connection is lost, yields what is
   * buffered and then throws UNAVAILABLE. `break`/`return()` or `signal` unsubscribes.
   * The buffer is unbounded: iterate promptly or stop iterating.
   */
  iterate(names?: readonly string[], signal?: AbortSignal): AsyncIterableIterator<QmpEvent> {
    // Events not yet taken, and `next()` calls not yet answered: at most one of them is non-empty.
    // Several `next()` calls may wait at once (the protocol allows calling it again before the
    // earlier promise settled); they are answered in call order.
    const queue: QmpEvent[] = [];
    const waiting: Array<{ resolve: (r: IteratorResult<QmpEvent>) => void; reject: (e: unknown) => void }> = [];
    let finished: { error: CairnError | undefined } | undefined;
    const wanted = names && names.length > 0 ? new Set(names) : undefined;

    const finish = (error: CairnError | undefined): void => {
      if (finished) return;
      finished = { error };
      unsubscribe();
      unsubscribeClose();
      signal?.removeEventListener('abort', onAbort);
      // The first waiter gets the error (reported once, as `next()` does), the others `done`.
      for (const [i, w] of waiting.splice(0).entries()) {
        if (error && i === 0) {
          finished = { error: undefined };
          w.reject(error);
        } else w.resolve({ value: undefined, done: true });
      }
    };
    const onAbort = (): void => finish(undefined);
    const listener: QmpEventListener = (event) => {
      if (finished || (wanted && !wanted.has(event.event))) return;
      const w = waiting.shift();
      if (w) w.resolve({ value: event, done: false });
      else queue.push(event);
    };
    const unsubscribe = this.on(ANY, listener);
    const unsubscribeClose = this.onClose((error) => finish(error));
    if (this.closedWith) finish(this.closedWith.error);
    else if (signal?.aborted) finish(undefined);
    else signal?.addEventListener('abort', onAbort, { once: true });

    const iterator: AsyncIterableIterator<QmpEvent> = {
      next: () => {
        const head = queue.shift();
        if (head) return Promise.resolve({ value: head, done: false });
        if (finished) {
          const error = finished.error;
          finished = { error: undefined }; // report a lost connection once, then plain `done`
          return error ? Promise.reject(error) : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
      },
      return: () => {
        queue.length = 0;
        finish(undefined);
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /**
   * Resolves with the first event named `name` for which `predicate` holds, counting from this
   * call. Rejects UNAVAILABLE on timeout (counted from this call, or from `options.after`'s
   * reply; an event received by the deadline still wins: core's onDeadline) or when the
   * connection closes, CANCELLED on abort, `after`'s error when it rejects first,
   * INVALID_INPUT for a bad `timeoutMs` (see `checkTimeoutMs`).
   * The returned promise is pre-marked handled, so an abandoned waiter never raises an
   * unhandled rejection; awaiting it still throws.
   */
  wait(name: string, predicate: ((event: QmpEvent) => boolean) | undefined, options: WaitForEventOptions = {}): Promise<QmpEvent> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_EVENT_TIMEOUT_MS;
    const { signal } = options;
    const promise = new Promise<QmpEvent>((resolve, reject) => {
      try {
        checkTimeoutMs('timeoutMs', options.timeoutMs, this.driver, true);
      } catch (err) {
        return reject(err);
      }
      if (this.closedWith) return reject(this.closedWith.error ?? unavailable(`waiting for ${name}: connection closed`, this.driver));
      if (signal?.aborted) return reject(new CairnError('CANCELLED', `waiting for ${name} cancelled`, { driver: this.driver, cause: signal.reason }));
      let cancelDeadline: (() => void) | undefined;
      let done = false;
      const cleanup = (): void => {
        done = true;
        unsubscribe();
        unsubscribeClose();
        cancelDeadline?.();
        signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        cleanup();
        reject(new CairnError('CANCELLED', `waiting for ${name} cancelled`, { driver: this.driver, cause: signal?.reason }));
      };
      const unsubscribe = this.on(name, (event) => {
        let match: boolean;
        try {
          match = predicate ? predicate(event) : true;
        } catch (err) {
          cleanup();
          return reject(err);
        }
        if (!match) return;
        cleanup();
        resolve(event);
      });
      const unsubscribeClose = this.onClose((error) => {
        cleanup();
        reject(error ?? unavailable(`waiting for ${name}: connection closed`, this.driver));
      });
      const startDeadline = (): void => {
        if (done || !Number.isFinite(timeoutMs)) return;
        // An event already received when the deadline passes still wins (core's onDeadline).
        cancelDeadline = onDeadline(timeoutMs, () => {
          cleanup();
          const from = options.after ? ' of the reply' : '';
          reject(unavailable(`no ${name} event within ${timeoutMs} ms${from}`, this.driver, undefined, { event: name, timeoutMs }));
        });
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      if (!options.after) return startDeadline();
      options.after.then(startDeadline, (err: unknown) => {
        if (done) return;
        cleanup();
        reject(err);
      });
    });
    promise.catch(() => undefined);
    return promise;
  }

  /** Ends every iterator and waiter: `error` undefined means a deliberate close. Idempotent. */
  close(error: CairnError | undefined): void {
    if (this.closedWith) return;
    this.closedWith = { error };
    for (const fn of [...this.closeListeners]) fn(error);
    this.closeListeners.clear();
    this.listeners.clear();
  }

  private readonly closeListeners = new Set<(error: CairnError | undefined) => void>();

  private onClose(fn: (error: CairnError | undefined) => void): () => void {
    this.closeListeners.add(fn);
    return () => this.closeListeners.delete(fn);
  }
}
