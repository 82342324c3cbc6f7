// NbdServer.listen() and close(): the spare descriptor (FdReserve) and its timer are held exactly
// while the server listens. A failed listen() holds nothing; a closed server does not listen again.
// Descriptors are counted in /proc/self/fd (Linux); each test file runs in its own process.
import { readdirSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { devNull } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { NbdServer, type NbdBackend } from '../src/index.js';
import { outcome } from './helpers/outcome.js';
import { tempDir } from './helpers/peers.js';

let dir: { path: string; remove: () => Promise<void> };
let n = 0;

beforeAll(async () => {
  dir = await tempDir('nbd-lis-');
});
afterEach(() => {
  vi.restoreAllMocks();
});
afterAll(async () => {
  await dir?.remove();
});

const backend: NbdBackend = { size: 1024 * 1024, read: async (_o, len) => [{ zero: len }] };
const newServer = (): NbdServer => new NbdServer({ exports: [{ name: 'x', backend }] });
const socketPath = (): string => join(dir.path, `l${++n}.sock`);

/** Descriptors of this process open on the null device (what FdReserve holds). */
function nullDescriptors(): number {
  let count = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === devNull) count++;
    } catch {
      // the directory's own descriptor, closed meanwhile
    }
  }
  return count;
}

/** Counts the intervals set from now on and not cleared (FdReserve's check timer). */
function trackIntervals(): () => number {
  const live = new Set<unknown>();
  const set = globalThis.setInterval;
  const clear = globalThis.clearInterval;
  vi.spyOn(globalThis, 'setInterval').mockImplementation(((...args: Parameters<typeof setInterval>) => {
    const t = set(...args);
    live.add(t);
    return t;
  }) as typeof setInterval);
  vi.spyOn(globalThis, 'clearInterval').mockImplementation(((t: Parameters<typeof clearInterval>[0]) => {
    live.delete(t);
    clear(t);
  }) as typeof clearInterval);
  return () => live.size;
}

/** Whether something accepts connections on the unix socket `path`. */
function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('NbdServer.listen', () => {
  it('listen() holds one spare descriptor and a timer until close() releases both', async () => {
    const live = trackIntervals();
    const before = nullDescriptors();
    const server = newServer();
    await server.listen({ path: socketPath() });
    expect(nullDescriptors()).toBe(before + 1);
    expect(live()).toBe(1);
    await server.close();
    expect(nullDescriptors()).toBe(before);
    expect(live()).toBe(0);
  });

  it('listen({ port: 70000 }) fails with INVALID_INPUT holding no descriptor or timer; a later listen() succeeds', async () => {
    const live = trackIntervals();
    const before = nullDescriptors();
    const server = newServer();
    await expect(server.listen({ port: 70000 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(nullDescriptors()).toBe(before);
    expect(live()).toBe(0);
    const path = socketPath();
    await server.listen({ path });
    expect(await accepts(path)).toBe(true);
    await server.close();
    expect(nullDescriptors()).toBe(before);
    expect(live()).toBe(0);
  });

  it('listen() on an address in use fails with CONFLICT holding no descriptor or timer', async () => {
    const first = newServer();
    const address = await first.listen({ port: 0 });
    const live = trackIntervals();
    const before = nullDescriptors();
    const second = newServer();
    await expect(second.listen(address)).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(nullDescriptors()).toBe(before);
    expect(live()).toBe(0);
    await second.close();
    await first.close();
  });

  it('listen() while listening fails with INVALID_INPUT and the server keeps listening', async () => {
    const server = newServer();
    const path = socketPath();
    await server.listen({ path });
    const before = nullDescriptors();
    await expect(server.listen({ path: socketPath() })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(nullDescriptors()).toBe(before);
    expect(await accepts(path)).toBe(true);
    await server.close();
    expect(nullDescriptors()).toBe(before - 1);
  });

  it('listen() after close() fails with INVALID_INPUT holding no descriptor or timer', async () => {
    const live = trackIntervals();
    const before = nullDescriptors();
    const server = newServer();
    await server.listen({ path: socketPath() });
    await server.close();
    await expect(server.listen({ port: 0 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await server.close(); // idempotent: nothing left to release
    expect(nullDescriptors()).toBe(before);
    expect(live()).toBe(0);
    const never = newServer();
    await never.close();
    await expect(never.listen({ path: socketPath() })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(nullDescriptors()).toBe(before);
    expect(live()).toBe(0);
  });

  it.each([
    ['a unix socket', (): { path: string } => ({ path: socketPath() })],
    ['TCP', (): { port: number } => ({ port: 0 })],
  ])('close() while listen() on %s is pending fails that listen() with CANCELLED, holding no descriptor or timer', async (_what, address) => {
    const live = trackIntervals();
    const before = nullDescriptors();
    const server = newServer();
    const at = address();
    const listening = server.listen(at);
    await server.close();
    expect(await outcome(listening, 1000)).toBe('CANCELLED');
    expect(nullDescriptors()).toBe(before);
    expect(live()).toBe(0);
    if ('path' in at) expect(await accepts(at.path)).toBe(false);
  });
});
