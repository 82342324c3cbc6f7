// proto.md, "Termination of the session during option haggling": a client that ends the session
// MUST use a soft disconnect (NBD_OPT_ABORT) unless the server broke a MUST or TLS failed, and
// "If the client receives NBD_REP_ERR_SHUTDOWN it MUST initiate a soft disconnect". So an option
// refused with an error reply ends with NBD_OPT_ABORT from our client, never a bare hang-up.
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { mustRun, startDaemon, tempDir, type Daemon } from './helpers/peers.js';
import { RawSocket, serveOptions } from './helpers/raw-nbd.js';

// Numbers from proto.md.
const OPT = { ABORT: 2, LIST: 3, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9 };
const REP_ACK = 1;
const REP_ERR_POLICY = 0x80000002;
const REP_ERR_SHUTDOWN = 0x80000007;

let dir: { path: string; remove: () => Promise<void> };

beforeAll(async () => {
  dir = await tempDir('nbd-soft-');
});
afterAll(async () => {
  await dir?.remove();
});

/**
 * A scripted server: answers each option with `answer(opt)` (a reply type), records the options
 * received, and resolves `done` with them once the client ended its side (or after NBD_OPT_ABORT,
 * which it acknowledges before ending its own side).
 */
async function scripted(name: string, answer: (opt: number) => number): Promise<{ path: string; done: Promise<number[]>; close: () => Promise<void> }> {
  const path = join(dir.path, `${name}.sock`);
  let report: (opts: number[]) => void = () => undefined;
  const done = new Promise<number[]>((resolve) => (report = resolve));
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    const raw = new RawSocket(s);
    const seen: number[] = [];
    void serveOptions(s, raw, ({ opt, reply }) => {
      seen.push(opt);
      if (opt === OPT.ABORT) {
        reply(REP_ACK);
        s.end();
        return true;
      }
      reply(answer(opt));
      return false;
    })
      .catch(() => undefined) // the client hung up: what it sent is recorded
      .finally(() => report(seen));
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { path, done, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe('NbdClient ends a refused negotiation with a soft disconnect (NBD_OPT_ABORT)', () => {
  it('NBD_OPT_GO refused by qemu-nbd (unknown export): NOT_FOUND, and qemu-nbd sees NBD_OPT_ABORT instead of a hang-up', async () => {
    const img = join(dir.path, 'q.raw');
    const sock = join(dir.path, 'q.sock');
    await mustRun('qemu-img', ['create', '-q', '-f', 'raw', img, '1M']);
    const qemu: Daemon = await startDaemon(
      'qemu-nbd',
      ['-k', sock, '-f', 'raw', '-x', 'disk', '-t', '--trace', 'nbd_negotiate_options_check_option', img],
      [sock],
    );
    try {
      await expect(NbdClient.connect({ path: sock, exportName: 'nope' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
      // qemu-nbd traces every option it reads; a client that hung up makes it log a failed negotiation.
      await expect.poll(() => qemu.log(), { timeout: 20_000 }).toMatch(/Checking option 2 \(abort\)/);
      expect(qemu.log()).not.toMatch(/option negotiation failed/);
      // The connection was let go of gracefully: qemu-nbd still serves the next client.
      const c = await NbdClient.connect({ path: sock, exportName: 'disk' });
      expect(c.size).toBe(1024 * 1024);
      await c.disconnect();
    } finally {
      await qemu.stop();
    }
  });

  it('NBD_REP_ERR_SHUTDOWN to NBD_OPT_STRUCTURED_REPLY: UNAVAILABLE, and the next option sent is NBD_OPT_ABORT (no further options)', async () => {
    const s = await scripted('shutdown', () => REP_ERR_SHUTDOWN);
    try {
      await expect(NbdClient.connect({ path: s.path, exportName: 'x' })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      expect(await s.done).toEqual([OPT.STRUCTURED_REPLY, OPT.ABORT]);
    } finally {
      await s.close();
    }
  });

  it('NBD_OPT_LIST and NBD_OPT_LIST_META_CONTEXT refused with NBD_REP_ERR_POLICY: INVALID_INPUT, then NBD_OPT_ABORT', async () => {
    const list = await scripted('list', () => REP_ERR_POLICY);
    try {
      await expect(NbdClient.listExports({ path: list.path })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
      expect(await list.done).toEqual([OPT.LIST, OPT.ABORT]);
    } finally {
      await list.close();
    }
    const meta = await scripted('meta', (opt) => (opt === OPT.STRUCTURED_REPLY ? REP_ACK : REP_ERR_POLICY));
    try {
      await expect(NbdClient.listMetaContexts({ path: meta.path }, 'x')).rejects.toMatchObject({ code: 'INVALID_INPUT' });
      expect(await meta.done).toEqual([OPT.STRUCTURED_REPLY, OPT.LIST_META, OPT.ABORT]);
    } finally {
      await meta.close();
    }
  });
});
