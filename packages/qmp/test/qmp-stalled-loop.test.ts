import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient } from '../src/index.js';
import { answerReturn, FakeQmpPeers, type QmpCommand } from './helpers.js';

// When this process's event loop stalls (synchronous work, or the process not scheduled on a
// loaded machine) past a call's deadline while the daemon's reply is already in the socket, node
// runs the expired timer before it reads the socket. The call then failed `no reply within N ms`
// although the reply had arrived in time, and the reply was dropped. A real peer writes the reply;
// the stall is made by blocking the loop right after (a synchronous wait longer than the timeout).
const peers = new FakeQmpPeers();
beforeAll(() => peers.open());
afterAll(() => peers.close());

/**
 * The deadline under test (ms). It must cover the work before the stall (the peer, in this
 * process, reading the command and answering), however loaded the machine: 1 s. The stall, twice
 * that, passes the deadline whenever the stall starts.
 */
const TIMEOUT = 1_000;
/** Blocks this thread (and so the event loop) for `ms`. */
const stallLoop = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

describe('QmpClient after its event loop stalled past a deadline', () => {
  it('a reply received before the stall ended reaches its caller; the call does not time out', async () => {
    const { path } = await peers.listen((m: QmpCommand, s: net.Socket) => {
      if (m.execute !== 'x-answered') return answerReturn(s, m);
      answerReturn(s, m, { answered: m.id });
      stallLoop(TIMEOUT * 2); // the reply waits in the client's socket while the deadline passes
    });
    const client = await QmpClient.connect({ path });
    try {
      await expect(client.execute<{ answered: string }>('x-answered', {}, { timeoutMs: TIMEOUT })).resolves.toMatchObject({ answered: expect.stringMatching(/^cairn-/) });
      expect(client.droppedReplies).toBe(0);
    } finally {
      await client.close();
    }
  });

  it('an event received before the stall ended resolves its waiter; the wait does not time out', async () => {
    const { path } = await peers.listen((m: QmpCommand, s: net.Socket) => {
      answerReturn(s, m);
      if (m.execute !== 'x-emit') return;
      s.write(`${JSON.stringify({ event: 'BLOCK_EXPORT_DELETED', data: { id: 'e1' }, timestamp: { seconds: 1, microseconds: 0 } })}\r\n`);
      stallLoop(TIMEOUT * 2);
    });
    const client = await QmpClient.connect({ path });
    try {
      const deleted = client.waitForEvent('BLOCK_EXPORT_DELETED', (e) => e.data.id === 'e1', { timeoutMs: TIMEOUT });
      await client.execute('x-emit', {}, { timeoutMs: 10_000 });
      await expect(deleted).resolves.toMatchObject({ data: { id: 'e1' } });
    } finally {
      await client.close();
    }
  });
});
