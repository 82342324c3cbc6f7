// A failed accept() on a listening NbdServer (EMFILE: out of file descriptors, …) is reported
// through onError and never crashes the process; the server keeps serving.
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import type { CairnError } from '@cairn/core';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { AcceptErrorReporter } from '../src/accept-errors.js';
import { NbdClient, NbdServer, type NbdBackend } from '../src/index.js';
import { tempDir } from './helpers/peers.js';

const MiB = 1024 * 1024;
let dir: { path: string; remove: () => Promise<void> };

beforeAll(async () => {
  dir = await tempDir('nbd-acc-');
});
afterAll(async () => {
  await dir?.remove();
});
afterEach(() => {
  vi.restoreAllMocks();
});

/** The libuv handle under a net.Server: node calls `onconnection(status)` for every accept(). */
type ListenHandle = { onconnection: (status: number) => void };

/** Collects the net.Servers created from now on (the one inside an NbdServer). */
function spyCreateServer(): net.Server[] {
  const created: net.Server[] = [];
  const createServer = net.createServer;
  vi.spyOn(net, 'createServer').mockImplementation(((...args: Parameters<typeof net.createServer>) => {
    const s = createServer(...args);
    created.push(s);
    return s;
  }) as typeof net.createServer);
  return created;
}

describe('NbdServer accept errors', () => {
  it('an accept failure after listen (EMFILE) goes to onError as UNAVAILABLE instead of crashing, and the server keeps serving', async () => {
    const created = spyCreateServer();
    const errors: CairnError[] = [];
    const backend: NbdBackend = { size: MiB, read: async (_o, len) => Buffer.alloc(len, 7) };
    const server = new NbdServer({ exports: [{ name: 'x', backend }], onError: (e) => errors.push(e) });
    const path = join(dir.path, 'a.sock');
    await server.listen({ path });
    expect(created).toHaveLength(1);
    // What node does when accept() fails with EMFILE: the listen handle's onconnection gets the
    // (negative) errno, and net.Server emits 'error' — which, unheard, throws out of the event loop.
    const handle = (created[0] as unknown as { _handle: ListenHandle })._handle;
    expect(() => handle.onconnection(-os.constants.errno.EMFILE)).not.toThrow();
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: 'UNAVAILABLE', driver: 'nbd-server', details: { syscall: 'accept', errno: 'EMFILE', count: 1 } });
    expect(errors[0]!.message).toMatch(/accept failed: .*EMFILE/);
    // Still listening and serving.
    const c = await NbdClient.connect({ path, exportName: 'x' });
    expect((await c.read(0, 4096)).equals(Buffer.alloc(4096, 7))).toBe(true);
    await c.disconnect();
    await server.close();
  });

  it('without onError an accept failure is dropped, not thrown', async () => {
    const created = spyCreateServer();
    const server = new NbdServer({ exports: [{ name: 'x', backend: { size: MiB, read: async (_o, len) => [{ zero: len }] } }] });
    await server.listen({ path: join(dir.path, 'b.sock') });
    const handle = (created[0] as unknown as { _handle: ListenHandle })._handle;
    expect(() => handle.onconnection(-os.constants.errno.ENFILE)).not.toThrow();
    await server.close();
  });
});

describe('AcceptErrorReporter', () => {
  const emfile = (): NodeJS.ErrnoException => Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', syscall: 'accept' });

  it('reports the first failure at once, then at most one per interval counting the failures since the last report', () => {
    let now = 10_000;
    const reports: CairnError[] = [];
    const r = new AcceptErrorReporter((e) => reports.push(e), 'drv', 1000, () => now);
    for (let i = 0; i < 500; i++) r.onError(emfile()); // libuv retrying on every loop turn
    expect(reports.map((e) => e.details?.count)).toEqual([1]);
    now += 999;
    r.onError(emfile());
    expect(reports).toHaveLength(1);
    now += 1;
    r.onError(emfile());
    expect(reports.map((e) => e.details?.count)).toEqual([1, 501]);
    expect(reports[1]).toMatchObject({ code: 'UNAVAILABLE', driver: 'drv', details: { errno: 'EMFILE', syscall: 'accept' } });
  });

  it('a reporter that throws does not make the failure throw', () => {
    const r = new AcceptErrorReporter(() => {
      throw new Error('logger down');
    }, 'drv');
    expect(() => r.onError(emfile())).not.toThrow();
  });

  it('rate-limits on a monotonic clock: a wall clock set back an hour does not silence reports', async () => {
    const reports: CairnError[] = [];
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      const r = new AcceptErrorReporter((e) => reports.push(e), 'drv', 1000);
      r.onError(emfile());
      vi.setSystemTime(Date.now() - 3_600_000);
      await new Promise((resolve) => setTimeout(resolve, 1100)); // real time: only Date is faked
      r.onError(emfile());
    } finally {
      vi.useRealTimers();
    }
    expect(reports.map((e) => e.details?.count)).toEqual([1, 1]);
  });
});
