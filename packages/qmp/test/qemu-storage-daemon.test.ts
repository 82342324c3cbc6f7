import { existsSync } from 'node:fs';
import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuStorageDaemon, type BlockDirtyInfo, type QmpClient } from '../src/index.js';
import { createQcow2, expectCode, imageBitmaps, removeDir, tempDir } from './helpers.js';

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

// Restarting a daemon on the same image is what these tests are about, so each starts its own.
let dir: string;
const started: QemuStorageDaemon[] = [];

async function startOn(image: string): Promise<QemuStorageDaemon> {
  const d = await QemuStorageDaemon.start();
  started.push(d);
  await d.qmp.execute('blockdev-add', { driver: 'file', 'node-name': 'f0', filename: image });
  await d.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'd0', file: 'f0' });
  return d;
}

async function bitmapsOf(qmp: QmpClient, node: string): Promise<BlockDirtyInfo[]> {
  const nodes = await qmp.execute('query-named-block-nodes', { flat: true });
  return nodes.find((n) => n['node-name'] === node)?.['dirty-bitmaps'] ?? [];
}

beforeAll(async () => {
  dir = await tempDir();
});

afterAll(async () => {
  await Promise.all(started.map((d) => d.kill()));
  await removeDir(dir);
});

describe('QemuStorageDaemon lifecycle', () => {
  it('start() gives a connected client on a socket path under 108 bytes; stop() exits 0 and removes the temp dir', async () => {
    const d = await QemuStorageDaemon.start();
    started.push(d);
    expect(Buffer.byteLength(d.socketPath)).toBeLessThan(108);
    expect(d.pid).toBeGreaterThan(0);
    expect(Array.isArray(await d.qmp.execute('query-block-exports'))).toBe(true);
    const exit = await d.stop();
    expect(exit).toEqual({ code: 0, signal: null });
    expect(d.qmp.closed).toBe(true);
    expect(await d.qmp.whenClosed).toBeUndefined();
    expect(existsSync(d.dir)).toBe(false);
    expect(await d.stop()).toEqual(exit);
  });

  it('start(bad --blockdev) fails with UNAVAILABLE and carries the daemon stderr', async () => {
    const err = await expectCode(
      QemuStorageDaemon.start({ args: ['--blockdev', 'driver=file,node-name=x,filename=/nonexistent/cairn.img'] }),
      'UNAVAILABLE',
    );
    expect(String(err.details?.log)).toContain('/nonexistent/cairn.img');
  });

  it('start(missing binary) fails with UNAVAILABLE', async () => {
    await expectCode(QemuStorageDaemon.start({ binary: '/nonexistent/qemu-storage-daemon' }), 'UNAVAILABLE');
  });

  it('start(binary that is not executable) fails with UNAVAILABLE "cannot run", not as a daemon that exited', async () => {
    const notExecutable = `${dir}/not-executable`;
    await writeFile(notExecutable, '', { mode: 0o644 });
    const err = await expectCode(QemuStorageDaemon.start({ binary: notExecutable }), 'UNAVAILABLE');
    expect((err as unknown as Error).message).toContain(`cannot run ${notExecutable}`);
    expect((err as unknown as Error).message).not.toContain('exited during startup');
    expect(String(err.details?.log)).toMatch(/Permission denied/);
  });

  it('start(tmpParent missing) fails with a CairnError NOT_FOUND naming it', async () => {
    const err = await expectCode(QemuStorageDaemon.start({ tmpParent: `${dir}/missing` }), 'NOT_FOUND');
    expect((err as unknown as Error).message).toContain(`${dir}/missing`);
  });

  it('start(an argument or binary holding a NUL byte) fails with INVALID_INPUT and leaves no temp dir', async () => {
    const parent = await mkdtemp(`${dir}/nul-`);
    await expectCode(QemuStorageDaemon.start({ tmpParent: parent, args: ['--blockdev', 'driver=null-co,node-name=a\0b'] }), 'INVALID_INPUT');
    await expectCode(QemuStorageDaemon.start({ tmpParent: parent, binary: 'qemu-storage-daemon\0' }), 'INVALID_INPUT');
    expect(await readdir(parent)).toEqual([]);
  });

  it('stop() after the QMP client was closed ends the daemon cleanly without waiting out quitTimeoutMs', { timeout: 10_000 }, async () => {
    const image = await createQcow2(dir, 'closed-qmp.qcow2');
    const d = await startOn(image);
    await d.qmp.execute('block-dirty-bitmap-add', { node: 'd0', name: 'b0', persistent: true });
    await d.qmp.close(); // no `quit` can be sent now
    // Far beyond the test's timeout: only a stop that does not wait for a quit that was never sent passes.
    expect(await d.stop({ quitTimeoutMs: 60_000 })).toEqual({ code: 0, signal: null });
    // SIGTERM is qemu-storage-daemon's clean quit: the bitmap was written, not left in use.
    const [bitmap] = await imageBitmaps(image);
    expect(bitmap).toMatchObject({ name: 'b0' });
    expect(bitmap!.flags).not.toContain('in-use');
  });

  it('start() drops a connection that gets no greeting and connects again (a stand-in daemon that ignores its first connection)', async () => {
    const d = await QemuStorageDaemon.start({ binary: fixture('greet-second.mjs'), startTimeoutMs: 8_000 });
    expect(d.qmp.greeting.version.qemu.major).toBe(7);
    expect(await d.stop()).toEqual({ code: 0, signal: null });
  });

  it('start() of a daemon that stays stopped fails with UNAVAILABLE naming the process state', async () => {
    const err = await expectCode(QemuStorageDaemon.start({ binary: fixture('stop-self.sh'), startTimeoutMs: 1_500 }), 'UNAVAILABLE');
    expect(String((err as unknown as Error).message)).toMatch(/was stopped \(T\)/);
    expect(err.details?.processState).toBe('stopped (T)');
    expect(err.details?.exit).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('kill() while stop() waits on a frozen daemon sends SIGKILL at once; the stop resolves with the same exit', { timeout: 60_000 }, async () => {
    const d = await QemuStorageDaemon.start();
    started.push(d);
    d.signal('SIGSTOP'); // wedged: quit gets no answer and SIGTERM stays pending
    const stopping = d.stop({ quitTimeoutMs: 600_000, termTimeoutMs: 600_000 }); // far past the test's timeout: only the kill can end it
    await new Promise((r) => setTimeout(r, 100)); // quit is sent and waits
    const exit = await d.kill();
    expect(exit).toEqual({ code: null, signal: 'SIGKILL' });
    expect(await stopping).toEqual(exit);
    expect(d.exit).toEqual(exit);
  });

  it('kill() during a pending call fails it with UNAVAILABLE, and later calls too', async () => {
    const d = await QemuStorageDaemon.start();
    started.push(d);
    d.signal('SIGSTOP'); // frozen: the call below cannot be answered before the kill
    const pending = expectCode(d.qmp.execute('query-named-block-nodes', { flat: true }), 'UNAVAILABLE');
    const exit = await d.kill();
    expect(exit.signal).toBe('SIGKILL');
    await pending;
    await expectCode(d.qmp.execute('query-version'), 'UNAVAILABLE');
    await expectCode(d.qmp.waitForEvent('SHUTDOWN'), 'UNAVAILABLE');
    expect(d.qmp.closed).toBe(true);
    expect((await d.qmp.whenClosed)?.code).toBe('UNAVAILABLE');
  });
});

describe('persistent dirty bitmaps across restarts', () => {
  let image: string;

  it('block-dirty-bitmap-add(persistent) is listed by qemu-img info after a clean stop()', async () => {
    image = await createQcow2(dir, 'bitmaps.qcow2');
    const d = await startOn(image);
    await d.qmp.execute('block-dirty-bitmap-add', { node: 'd0', name: 'b0', persistent: true });
    await d.qmp.execute('block-dirty-bitmap-add', { node: 'd0', name: 'volatile' });
    expect(await imageBitmaps(image)).toEqual([]); // not written while the daemon runs
    await d.stop();
    const saved = await imageBitmaps(image);
    expect(saved.map((b) => b.name)).toEqual(['b0']);
    expect(saved[0]!.flags).toContain('auto');
    expect(saved[0]!.flags).not.toContain('in-use');
  });

  it('a restarted daemon loads the bitmap consistent and marks it in-use in the file', async () => {
    const d = await startOn(image);
    const loaded = await bitmapsOf(d.qmp, 'd0');
    expect(loaded).toEqual([expect.objectContaining({ name: 'b0', persistent: true, recording: true })]);
    expect(loaded[0]!.inconsistent ?? false).toBe(false);
    expect((await imageBitmaps(image))[0]!.flags).toContain('in-use');
    await d.stop();
  });

  it('after kill(SIGKILL) the bitmap comes back inconsistent on restart', async () => {
    const d = await startOn(image);
    await d.kill();
    expect((await imageBitmaps(image))[0]!.flags).toContain('in-use');
    const restarted = await startOn(image);
    const [b0] = await bitmapsOf(restarted.qmp, 'd0');
    expect(b0).toMatchObject({ name: 'b0', persistent: true, inconsistent: true, count: 0 });
    // An inconsistent bitmap cannot be used (CORRUPT), only removed.
    await expectCode(restarted.qmp.execute('block-dirty-bitmap-disable', { node: 'd0', name: 'b0' }), 'CORRUPT');
    await restarted.qmp.execute('block-dirty-bitmap-remove', { node: 'd0', name: 'b0' });
    await restarted.stop();
    expect(await imageBitmaps(image)).toEqual([]);
  });
});
