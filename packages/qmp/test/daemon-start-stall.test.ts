import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuStorageDaemon } from '../src/index.js';
import { QMP_SOCKET_NAME } from '../src/runtime-dirs.js';
import { removeDir, tempDir } from './helpers.js';

// When this process was held up (synchronous work, or not scheduled on a loaded machine) past
// startTimeoutMs right after spawning the daemon, start() gave up without one more connection
// attempt although the daemon was ready by then. A real qemu-storage-daemon is spawned; the hold is
// a synchronous wait from the moment start() has written the daemon's owner file (just after the
// spawn; the budget runs by then) until its QMP socket exists and the budget has passed 4 times over.
const START_TIMEOUT_MS = 200;

/** Blocks this thread (and so the event loop) for `ms`. */
const stallLoop = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** Whether `path` holds a whole JSON document (a file being written does not). */
const wholeJson = (path: string): boolean => {
  try {
    JSON.parse(readFileSync(path, 'utf8'));
    return true;
  } catch {
    return false;
  }
};

/** Resolves with the daemon's dir under `parent` once start() wrote its owner file, checking on every loop turn. */
function ownedIn(parent: string): Promise<string> {
  return new Promise((resolve) => {
    const check = (): void => {
      const name = readdirSync(parent).find((n) => wholeJson(join(parent, n, 'owner')));
      if (name) resolve(join(parent, name));
      else setImmediate(check);
    };
    check();
  });
}

let parent: string;
beforeAll(async () => {
  parent = await tempDir();
});
afterAll(() => removeDir(parent));

describe('QemuStorageDaemon.start() held up past startTimeoutMs', () => {
  it('connects to a daemon that is ready once the hold ends, instead of giving up', { timeout: 30_000 }, async () => {
    const starting = QemuStorageDaemon.start({ tmpParent: parent, startTimeoutMs: START_TIMEOUT_MS });
    starting.catch(() => undefined); // awaited below
    const dir = await ownedIn(parent);
    await new Promise((r) => setTimeout(r, 5)); // writeOwner's close and start()'s first attempt
    stallLoop(START_TIMEOUT_MS * 4);
    // Still held until the socket exists (bounded at 20 s), and a little longer: the file exists
    // from qemu's bind(), connections are accepted from its listen().
    const socket = join(dir, QMP_SOCKET_NAME);
    for (let i = 0; i < 2_000 && !existsSync(socket); i++) stallLoop(10);
    stallLoop(100);
    expect(existsSync(socket)).toBe(true);
    const daemon = await starting;
    try {
      expect(daemon.dir).toBe(dir);
      expect(Array.isArray(await daemon.qmp.execute('query-block-exports'))).toBe(true);
    } finally {
      expect(await daemon.stop()).toEqual({ code: 0, signal: null });
    }
  });
});
