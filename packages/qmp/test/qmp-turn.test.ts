import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient } from '../src/index.js';
import { answerReturn, expectCode, FakeQmpPeers, type QmpCommand } from './helpers.js';

// qemu's monitor (no OOB) runs one command at a time, in the order received. A call's timeout
// counts from its turn: once every call sent before it on the client has settled. Before, it
// counted from the sending, so a command queued behind a slow one timed out though the peer was
// healthy and answering in order. The peers here are scripted: they answer in order, each
// command `ANSWER_MS` after the previous answer (or never, for `x-stuck`).
const peers = new FakeQmpPeers();
beforeAll(() => peers.open());
afterAll(() => peers.close());

const ANSWER_MS = 200;
const TIMEOUT_MS = 300;

/**
 * A peer running one command at a time like qemu's monitor: `x-stuck` is never answered (nor
 * anything after it). `log`: `recv <command>` and `answer <command>` in the order they happened.
 */
async function inOrderPeer(): Promise<{ path: string; log: string[] }> {
  const log: string[] = [];
  const { path } = await peers.listen((() => {
    const queue: Array<{ m: QmpCommand; s: net.Socket }> = [];
    let busy = false;
    const next = (): void => {
      const head = queue.shift();
      if (!head) return void (busy = false);
      busy = true;
      if (head.m.execute === 'x-stuck') return; // held for ever: the monitor is stuck
      setTimeout(() => {
        log.push(`answer ${head.m.execute}`);
        answerReturn(head.s, head.m, { answered: head.m.execute });
        next();
      }, ANSWER_MS);
    };
    return (m: QmpCommand, s: net.Socket): void => {
      if (m.execute === 'qmp_capabilities') return answerReturn(s, m);
      log.push(`recv ${m.execute}`);
      queue.push({ m, s });
      if (!busy) next();
    };
  })());
  return { path, log };
}

/** Records the order in which `calls` settle, as `name:ok` or `name:CODE`. */
function settleOrder(calls: Record<string, Promise<unknown>>): string[] {
  const order: string[] = [];
  for (const [name, call] of Object.entries(calls)) {
    call.then(
      () => order.push(`${name}:ok`),
      (e: { code?: string }) => order.push(`${name}:${e.code}`),
    );
  }
  return order;
}

describe('QmpClient command deadlines count from the turn at the monitor', () => {
  it('calls queued behind slower ones, each answered within its timeout of its turn, all succeed (sent at once, not serialized)', async () => {
    const peer = await inOrderPeer();
    const client = await QmpClient.connect({ path: peer.path }, { commandTimeoutMs: TIMEOUT_MS });
    try {
      // Answered 200, 400, 600 and 800 ms after sending: only the first within 300 ms of its sending.
      const calls = ['x-a', 'x-b', 'x-c', 'x-d'].map((c) => client.execute<{ answered: string }>(c, {}));
      expect(await Promise.all(calls)).toEqual([{ answered: 'x-a' }, { answered: 'x-b' }, { answered: 'x-c' }, { answered: 'x-d' }]);
      expect(client.droppedReplies).toBe(0);
      expect(peer.log.slice(0, 5)).toEqual(['recv x-a', 'recv x-b', 'recv x-c', 'recv x-d', 'answer x-a']); // all written at once
    } finally {
      await client.close();
    }
  });

  it('a stuck head still times out, and the call behind it times out one timeout later (its clock starts when the head timed out)', async () => {
    const client = await QmpClient.connect({ path: (await inOrderPeer()).path });
    try {
      const stuck = client.execute('x-stuck', {}, { timeoutMs: TIMEOUT_MS });
      const behind = client.execute('x-behind', {}, { timeoutMs: TIMEOUT_MS });
      const order = settleOrder({ stuck, behind });
      const stuckErr = await expectCode(stuck, 'UNAVAILABLE');
      expect(stuckErr.details).toMatchObject({ command: 'x-stuck', timeoutMs: TIMEOUT_MS });
      expect(order).toEqual(['stuck:UNAVAILABLE']); // the call behind has its own full timeout still to run
      await expectCode(behind, 'UNAVAILABLE');
      expect(order).toEqual(['stuck:UNAVAILABLE', 'behind:UNAVAILABLE']);
    } finally {
      await client.close();
    }
  });

  it('a call behind one without a deadline waits as long as that one; aborting the head starts the next clock', async () => {
    const client = await QmpClient.connect({ path: (await inOrderPeer()).path });
    try {
      const ac = new AbortController();
      const stuck = client.execute('x-stuck', {}, { timeoutMs: Infinity, signal: ac.signal });
      const behind = client.execute('x-behind', {}, { timeoutMs: TIMEOUT_MS / 3 });
      const order = settleOrder({ stuck, behind });
      await sleep(TIMEOUT_MS); // three times the timeout of the call behind: it has not had its turn
      expect(order).toEqual([]);
      ac.abort();
      await expectCode(stuck, 'CANCELLED');
      await expectCode(behind, 'UNAVAILABLE'); // its turn came at the abort; the peer is stuck still
      expect(order).toEqual(['stuck:CANCELLED', 'behind:UNAVAILABLE']);
    } finally {
      await client.close();
    }
  });

  it('closing fails every queued call at once, whether its clock runs or not', async () => {
    const client = await QmpClient.connect({ path: (await inOrderPeer()).path });
    const stuck = client.execute('x-stuck', {}, { timeoutMs: 60_000 });
    const behind = client.execute('x-behind', {}, { timeoutMs: 60_000 });
    await client.close();
    await expectCode(stuck, 'UNAVAILABLE');
    await expectCode(behind, 'UNAVAILABLE');
  });
});
