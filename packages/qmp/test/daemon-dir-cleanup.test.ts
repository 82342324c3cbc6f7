import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuStorageDaemon } from '../src/index.js';
import { removeDir, tempDir } from './helpers.js';

// A daemon that dies on its own (crash, OOM kill, a signal from someone else) must not leave its
// temp dir behind until some later start() sweeps it: the dir goes once the death is observed,
// before `whenExited` resolves, unless keepDir. The log stays readable through readLog().
let parent: string;

beforeAll(async () => {
  parent = await tempDir();
});

afterAll(async () => {
  await removeDir(parent);
});

describe('QemuStorageDaemon temp dir after an unexpected death', () => {
  it('is removed once the daemon is seen to exit, without stop() or kill()', async () => {
    const daemon = await QemuStorageDaemon.start({ tmpParent: parent });
    expect(existsSync(daemon.dir)).toBe(true);
    process.kill(daemon.pid, 'SIGKILL'); // not through the instance: as if it crashed
    const exit = await daemon.whenExited;
    expect(exit.signal).toBe('SIGKILL');
    expect(existsSync(daemon.dir)).toBe(false);
    expect(typeof (await daemon.readLog())).toBe('string');
    expect(await daemon.qmp.whenClosed).toMatchObject({ code: 'UNAVAILABLE' });
    // stop() after that is harmless and reports the same exit.
    expect(await daemon.stop()).toEqual(exit);
    // A restart gets its own dir, which the dead one's cleanup leaves alone.
    const next = await QemuStorageDaemon.start({ tmpParent: parent });
    try {
      expect(next.dir).not.toBe(daemon.dir);
      expect(existsSync(next.dir)).toBe(true);
      await next.qmp.execute('query-version');
    } finally {
      await next.stop();
    }
    expect(existsSync(next.dir)).toBe(false);
  });

  it('is kept with keepDir, with the log in it', async () => {
    const daemon = await QemuStorageDaemon.start({ tmpParent: parent, keepDir: true });
    process.kill(daemon.pid, 'SIGKILL');
    await daemon.whenExited;
    await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(daemon.logPath)).toBe(true);
    await daemon.stop();
    expect(existsSync(daemon.logPath)).toBe(true);
  });
});
