/**
 * Deadlines that lose to input already received.
 *
 * After the event loop was held up (synchronous work, or a process not scheduled on a loaded
 * machine), node runs the timers that expired meanwhile before it reads sockets: a plain
 * setTimeout would fail a call whose reply is already waiting in the socket. `onDeadline` fires
 * its callback in the check phase after the timer, which comes after the loop's poll for I/O, so
 * a reply or event received by then is handled first (and the caller's settle cancels the
 * deadline). A deadline is therefore never early, and at most one loop turn late.
 */

/**
 * Calls `fire` `ms` after now, once input received by then has been handled. Returns the
 * cancel function (idempotent; `fire` never runs after it). `ms` must be finite (checkTimeoutMs).
 */
export function onDeadline(ms: number, fire: () => void): () => void {
  let immediate: NodeJS.Immediate | undefined;
  const timer = setTimeout(() => (immediate = setImmediate(fire)), ms);
  return () => {
    clearTimeout(timer);
    if (immediate) clearImmediate(immediate);
  };
}
