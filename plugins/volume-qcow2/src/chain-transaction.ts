import type { TransactionAction } from '@cairn/qmp';
import type { DaemonSession } from './daemon-session.js';
import { outcomeUnknown } from './outcome.js';

/**
 * Runs ONE QMP transaction that changes the checkpoint bitmaps of `node`. A QMP error reply
 * means nothing was applied (transactions are atomic). A failure without a reply (UNAVAILABLE:
 * timeout or lost connection; CANCELLED) leaves the outcome unknown: qemu still runs a command
 * the client stopped waiting for. The node is then marked unsettled (DaemonSession.isUnsettled)
 * before the error is rethrown, so nothing trusts the chain until it is reconciled.
 */
export async function chainTransaction(session: DaemonSession, node: string, steps: TransactionAction[]): Promise<void> {
  try {
    await session.qmp.transaction(steps);
  } catch (err) {
    if (outcomeUnknown(err)) session.markUnsettled(node);
    throw err;
  }
}
