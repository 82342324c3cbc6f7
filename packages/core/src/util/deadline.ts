/**
 * Deadlines that lose to input already received.
 *
 * After the event loop was held up (synchronous work, or a process not scheduled on a loaded
 * machine), node runs the timers that expired meanwhile before it reads sockets: a plain
 * setTimeout would fail a call whose reply is already waiting in the socket. `onDeadline` fires
 * its callback in the check phase after the timer, which comes after the loop's poll for I/O, so
 * a reply or event received by then is handled first (and the caller's settle cancels the
 * deadline). A deadline is therefore never early, and at most one loop turn late.
 *
 * A socket's 'close' event comes in the loop's close phase, after the check phase: a caller that
 * waits for the peer to hang up looks at what was read by then (`socket.readableEnded`, set at
 * the 'end' read in the poll phase) when its deadline fires.
 */

export interface DeadlineOptions {
  /** Does not keep the process alive by itself (the timer and its follow-up are unref'd). Default false. */
  unref?: boolean;
}

/**
 * Calls `fire` `ms` after now, once input received by then has been handled. Returns the
 * cancel function (idempotent; `fire` never runs after it). `ms` must be finite and from 0 to
 * 2^31 - 1 (the caller checks it: node fires a longer, negative or NaN timer at once).
 */
export function onDeadline(ms: number, fire: () => void, options: DeadlineOptions = {}): () => void {
  let immediate: NodeJS.Immediate | undefined;
  const timer = setTimeout(() => {
    immediate = setImmediate(fire);
    if (options.unref) immediate.unref();
  }, ms);
  if (options.unref) timer.unref();
  return () => {
    clearTimeout(timer);
    if (immediate) clearImmediate(immediate);
  };
}
