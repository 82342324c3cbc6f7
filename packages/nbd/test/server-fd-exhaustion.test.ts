// An NbdServer in a process out of file descriptors, whose libuv lost its reserve descriptor, does
// not spin on accept(): measured as the CPU time of a child process (Linux: /proc, prlimit).
//
// libuv (1.46) keeps one spare descriptor; when accept() fails with EMFILE it closes the spare,
// accepts and closes the pending connections, and reopens the spare. If the slot it frees is taken
// first (another thread opening a file), the reopen fails and the spare is gone: from then on a
// pending connection makes every turn of the event loop retry accept() and poll again at once.
// The test makes that race certain: after listen() it lowers the child's soft RLIMIT_NOFILE to the
// number of libuv's spare, so every lower slot is taken and the one libuv frees is above the limit.
// The server's own spare is opened by listen() before the socket, so it is the lower of the two
// null-device descriptors listen() opens and stays usable; were it the higher one, the test would
// pick it as libuv's, libuv's spare would survive, and the check that it was lost would fail.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { NbdClient } from '../src/index.js';
import { sleep } from './helpers/outcome.js';
import { mustRun, tempDir } from './helpers/peers.js';

const PACKAGE = fileURLToPath(new URL('..', import.meta.url));
const CHILD = join(PACKAGE, 'test/helpers/fd-starved-server.mjs');
let dir: { path: string; remove: () => Promise<void> };

beforeAll(async () => {
  dir = await tempDir('nbd-fd-');
});
afterAll(async () => {
  await dir?.remove();
});

/**
 * Fails unless every file of src/ has a dist/ counterpart: the child runs the built package, so
 * run `npx tsc -b` before this test (as before the CLI tests, which run bin/cairn.js).
 */
function assertBuilt(): void {
  const walk = (rel: string): void => {
    for (const e of readdirSync(join(PACKAGE, 'src', rel), { withFileTypes: true })) {
      const name = join(rel, e.name);
      if (e.isDirectory()) walk(name);
      else if (name.endsWith('.ts') && !existsSync(join(PACKAGE, 'dist', name.replace(/\.ts$/, '.js')))) {
        throw new Error(`packages/nbd/dist/${name.replace(/\.ts$/, '.js')} is missing: run \`npx tsc -b\` first`);
      }
    }
  };
  walk('');
}

/** CPU time (user + system, all threads) the process has used, in ms. */
function cpuMs(pid: number, ticksPerSecond: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond;
}

/** The targets of the process's open descriptors, by number. */
function descriptors(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(Number(fd), readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** The soft limit on open files of `pid`. */
function softNoFile(pid: number): number {
  const row = readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'))!;
  return Number(row.split(/\s{2,}/)[1]);
}

/** Opens a connection every `everyMs` until `stop()`, keeping each open (a client that waits). */
function keepConnecting(path: string, everyMs: number): { stop: () => void } {
  const sockets: net.Socket[] = [];
  let going = true;
  void (async () => {
    while (going) {
      const s = net.connect(path);
      s.on('error', () => undefined);
      sockets.push(s);
      await sleep(everyMs);
    }
  })();
  return {
    stop: () => {
      going = false;
      for (const s of sockets) s.destroy();
    },
  };
}

describe('NbdServer out of file descriptors', () => {
  it('with libuv\'s reserve descriptor lost, a client that keeps connecting costs the server under 50% of a core; the server reports EMFILE and serves again once descriptors are free', async () => {
    assertBuilt();
    const ticks = Number(await mustRun('getconf', ['CLK_TCK']));
    await mustRun('prlimit', ['--version']);
    const path = join(dir.path, 's.sock');
    const child: ChildProcess = spawn(process.execPath, [CHILD, path, pathToFileURL(join(PACKAGE, 'dist/index.js')).href], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const messages: Array<{ added?: Array<[number, string]>; error?: { code: string; details?: { errno?: string } } }> = [];
    const first = new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (l) => {
        messages.push(JSON.parse(l));
        resolve();
      });
      child.once('exit', (code) => reject(new Error(`child exited with ${code}: ${stderr}`)));
    });
    const pid = child.pid!;
    let clients: { stop: () => void } | undefined;
    try {
      await first;
      // libuv's reserve is the last null-device descriptor listen() opened.
      const reserve = Math.max(...messages[0]!.added!.filter(([, target]) => target === '/dev/null').map(([fd]) => fd));
      const soft = softNoFile(pid);
      await mustRun('prlimit', ['--pid', String(pid), `--nofile=${reserve}:`]);
      clients = keepConnecting(path, 20);
      // The first accept() loses the reserve (the server notices the shortage): waited for, not
      // slept on, since a loaded machine may take longer to get the clients connecting.
      await vi.waitFor(() => expect(descriptors(pid).has(reserve)).toBe(false), { timeout: 30_000, interval: 100 });

      const cpuBefore = cpuMs(pid, ticks);
      const wallBefore = Date.now();
      await sleep(2000);
      const share = (cpuMs(pid, ticks) - cpuBefore) / (Date.now() - wallBefore);

      // The condition was reproduced: libuv's reserve is closed and was not reopened (on "/").
      const open = descriptors(pid);
      expect(open.has(reserve)).toBe(false);
      expect([...open.values()]).not.toContain('/');
      // Spinning costs ~75–100% of a core here (measured on the code before the fix).
      expect(share).toBeLessThan(0.5);
      expect(messages.filter((m) => m.error).map((m) => [m.error!.code, m.error!.details?.errno])).toContainEqual(['UNAVAILABLE', 'EMFILE']);

      // Descriptors free again: the same listening socket serves a client.
      clients.stop();
      clients = undefined;
      await mustRun('prlimit', ['--pid', String(pid), `--nofile=${soft}:`]);
      let served: Buffer | undefined;
      for (const deadline = Date.now() + 5000; !served && Date.now() < deadline; await sleep(100)) {
        try {
          const c = await NbdClient.connect({ path, exportName: 'x', connectTimeoutMs: 1000 });
          served = await c.read(0, 4096);
          await c.disconnect();
        } catch {
          // shed while the server has not yet seen that descriptors are free
        }
      }
      expect(served?.equals(Buffer.alloc(4096))).toBe(true);
    } finally {
      clients?.stop();
      child.kill('SIGKILL');
    }
  });
});
