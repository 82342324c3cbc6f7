import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuStorageDaemon, QmpClient, actions, type BlockDirtyInfo, type QmpEvent } from '../src/index.js';
import { createQcow2, expectCode, freePort, removeDir, tcpMonitorArgs, tempDir, unixMonitorArgs } from './helpers.js';

const SIZE = 64 * 1024 * 1024;
let dir: string;
let image: string;
let auxSocket: string;
let tcpPort: number;
let daemon: QemuStorageDaemon;
let qmp: QmpClient;
let nbdSocket: string;

async function bitmaps(node: string): Promise<Map<string, BlockDirtyInfo>> {
  const nodes = await qmp.execute('query-named-block-nodes', { flat: true });
  const found = nodes.find((n) => n['node-name'] === node);
  return new Map((found?.['dirty-bitmaps'] ?? []).map((b) => [b.name ?? '', b]));
}

beforeAll(async () => {
  dir = await tempDir();
  image = await createQcow2(dir, 'disk.qcow2', SIZE);
  auxSocket = join(dir, 'aux.sock');
  nbdSocket = join(dir, 'nbd.sock');
  tcpPort = await freePort();
  daemon = await QemuStorageDaemon.start({ args: [...unixMonitorArgs('aux', auxSocket), ...tcpMonitorArgs('tcp', tcpPort)] });
  qmp = daemon.qmp;
  await qmp.execute('blockdev-add', { driver: 'file', 'node-name': 'disk-file', filename: image });
  await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'disk', file: 'disk-file' });
  await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbdSocket } } });
});

afterAll(async () => {
  await daemon?.stop();
  await removeDir(dir);
});

describe('QmpClient handshake', () => {
  it('connect() reads the greeting and query-version returns the same version', async () => {
    const { version, capabilities } = qmp.greeting;
    expect(Number.isInteger(version.qemu.major)).toBe(true);
    expect(Array.isArray(capabilities)).toBe(true);
    const v = await qmp.execute('query-version');
    expect(v).toEqual(version);
  });

  it('connect({ host, port }) over TCP loopback returns a working client', async () => {
    const tcp = await QmpClient.connect({ host: '127.0.0.1', port: tcpPort });
    try {
      expect((await tcp.execute('query-version')).qemu).toEqual(qmp.greeting.version.qemu);
    } finally {
      await tcp.close();
    }
  });

  it('connect() to a missing socket fails with UNAVAILABLE', async () => {
    await expectCode(QmpClient.connect({ path: join(dir, 'nobody.sock') }, { timeoutMs: 500 }), 'UNAVAILABLE');
  });

  it('connect() with a socket path of 108 bytes fails with INVALID_INPUT', async () => {
    await expectCode(QmpClient.connect({ path: `/tmp/${'x'.repeat(103)}` }), 'INVALID_INPUT');
  });
});

describe('QmpClient.execute', () => {
  it('blockdev-add(file) + blockdev-add(qcow2) show up in query-named-block-nodes', async () => {
    const nodes = await qmp.execute('query-named-block-nodes', { flat: true });
    const byName = new Map(nodes.map((n) => [n['node-name'], n]));
    expect(byName.get('disk')?.drv).toBe('qcow2');
    expect(byName.get('disk')?.image['virtual-size']).toBe(SIZE);
    expect(byName.get('disk-file')?.drv).toBe('file');
    expect(byName.get('disk-file')?.file).toBe(image);
  });

  it('execute(unknown command) fails with NOT_SUPPORTED and keeps the QMP class', async () => {
    const err = await expectCode(qmp.execute('x-no-such-command', {}), 'NOT_SUPPORTED');
    expect(err.details).toMatchObject({ qmpClass: 'CommandNotFound', command: 'x-no-such-command' });
  });

  it('blockdev-del(missing node) fails with NOT_FOUND', async () => {
    const err = await expectCode(qmp.execute('blockdev-del', { 'node-name': 'no-such-node' }), 'NOT_FOUND');
    expect(err.details?.qmpClass).toBe('GenericError');
  });

  it('block-dirty-bitmap-add(bad argument type) fails with INVALID_INPUT', async () => {
    const bad = { node: 'disk', name: 'typed', persistent: 'yes' } as unknown as { node: string; name: string };
    await expectCode(qmp.execute('block-dirty-bitmap-add', bad), 'INVALID_INPUT');
  });

  it('block-dirty-bitmap-add(existing name) fails with ALREADY_EXISTS', async () => {
    await qmp.execute('block-dirty-bitmap-add', { node: 'disk', name: 'dup' });
    await expectCode(qmp.execute('block-dirty-bitmap-add', { node: 'disk', name: 'dup' }), 'ALREADY_EXISTS');
    await qmp.execute('block-dirty-bitmap-remove', { node: 'disk', name: 'dup' });
  });

  it('blockdev-del(node in use) fails with CONFLICT and block-job-cancel(unknown job) with NOT_FOUND', async () => {
    await expectCode(qmp.execute('blockdev-del', { 'node-name': 'disk-file' }), 'CONFLICT');
    const err = await expectCode(qmp.execute('block-job-cancel', { device: 'no-such-job' }), 'NOT_FOUND');
    expect(err.details?.qmpClass).toBe('DeviceNotActive');
  });

  it('concurrent execute() calls each get their own reply, matched by id', async () => {
    const calls = Array.from({ length: 60 }, (_, i) => {
      switch (i % 4) {
        case 0:
          return qmp.execute('query-version').then((v) => ['version', v.qemu.major] as const);
        case 1:
          return qmp.execute('query-named-block-nodes', { flat: true }).then((n) => ['nodes', n.length] as const);
        case 2:
          return qmp.execute('blockdev-del', { 'node-name': `missing-${i}` }).then(
            () => ['del', 'resolved'] as const,
            (e: { code: string; details: { qmpDesc: string } }) => ['del', e.details.qmpDesc.includes(`missing-${i}`)] as const,
          );
        default:
          return qmp.execute('query-block-exports').then((x) => ['exports', Array.isArray(x)] as const);
      }
    });
    const results = await Promise.all(calls);
    results.forEach(([kind, value], i) => {
      if (i % 4 === 0) expect([kind, value]).toEqual(['version', qmp.greeting.version.qemu.major]);
      if (i % 4 === 1) expect([kind, value]).toEqual(['nodes', 2]);
      if (i % 4 === 2) expect([kind, value]).toEqual(['del', true]);
      if (i % 4 === 3) expect([kind, value]).toEqual(['exports', true]);
    });
  });

  it('execute() on a frozen daemon fails with UNAVAILABLE after timeoutMs and its late reply is dropped', async () => {
    const before = qmp.droppedReplies;
    daemon.signal('SIGSTOP');
    try {
      await expectCode(qmp.execute('query-version', undefined, { timeoutMs: 100 }), 'UNAVAILABLE');
    } finally {
      daemon.signal('SIGCONT');
    }
    const nodes = await qmp.execute('query-named-block-nodes', { flat: true });
    expect(Array.isArray(nodes)).toBe(true);
    expect(qmp.droppedReplies).toBe(before + 1);
  });

  it('execute() with an aborted signal fails with CANCELLED', async () => {
    const ac = new AbortController();
    daemon.signal('SIGSTOP');
    try {
      const call = qmp.execute('query-version', undefined, { signal: ac.signal });
      ac.abort();
      await expectCode(call, 'CANCELLED');
    } finally {
      daemon.signal('SIGCONT');
    }
    expect((await qmp.execute('query-version')).qemu).toEqual(qmp.greeting.version.qemu);
  });

  it('close() fails pending and later calls with UNAVAILABLE; a new connect() gives a new client', async () => {
    const aux = await QmpClient.connect({ path: auxSocket });
    const pending = aux.execute('query-named-block-nodes', { flat: true });
    await aux.close();
    await expectCode(pending, 'UNAVAILABLE');
    await expectCode(aux.execute('query-version'), 'UNAVAILABLE');
    expect(aux.closed).toBe(true);
    const again = await QmpClient.connect({ path: auxSocket });
    try {
      expect((await again.execute('query-version')).qemu).toEqual(qmp.greeting.version.qemu);
      expect(aux.closed).toBe(true);
    } finally {
      await again.close();
    }
  });
});

describe('QmpClient and QemuStorageDaemon timeout options', () => {
  const bad = [Number.NaN, -1, 2 ** 31];

  it.each(bad)('connect() with timeoutMs or commandTimeoutMs %s fails with INVALID_INPUT', async (v) => {
    const timeout = await expectCode(QmpClient.connect({ path: auxSocket }, { timeoutMs: v }), 'INVALID_INPUT');
    expect(timeout.details).toMatchObject({ option: 'timeoutMs' });
    const command = await expectCode(QmpClient.connect({ path: auxSocket }, { commandTimeoutMs: v }), 'INVALID_INPUT');
    expect(command.details).toMatchObject({ option: 'commandTimeoutMs' });
  });

  it.each(bad)('execute() and waitForEvent() with timeoutMs %s fail at once with INVALID_INPUT, even on a frozen daemon', { timeout: 60_000 }, async (v) => {
    daemon.signal('SIGSTOP'); // nothing would answer: only the refusal can end these calls
    try {
      await expectCode(qmp.execute('query-version', undefined, { timeoutMs: v }), 'INVALID_INPUT');
      await expectCode(qmp.waitForEvent('SHUTDOWN', undefined, { timeoutMs: v }), 'INVALID_INPUT');
    } finally {
      daemon.signal('SIGCONT');
    }
    expect((await qmp.execute('query-version', undefined, { timeoutMs: Infinity })).qemu).toEqual(qmp.greeting.version.qemu);
  });

  it.each(bad)('QemuStorageDaemon.start() and stop() with a timeout of %s fail with INVALID_INPUT, and the daemon keeps running', async (v) => {
    await expectCode(QemuStorageDaemon.start({ startTimeoutMs: v }), 'INVALID_INPUT');
    await expectCode(QemuStorageDaemon.start({ commandTimeoutMs: v }), 'INVALID_INPUT');
    await expectCode(daemon.stop({ quitTimeoutMs: v }), 'INVALID_INPUT');
    await expectCode(daemon.stop({ termTimeoutMs: v }), 'INVALID_INPUT');
    expect(daemon.exit).toBeUndefined(); // still running: nothing was sent
    expect((await qmp.execute('query-version')).qemu).toEqual(qmp.greeting.version.qemu);
  });
});

describe('QmpClient.transaction', () => {
  it('transaction(disable old + add new) applies both atomically', async () => {
    await qmp.execute('block-dirty-bitmap-add', { node: 'disk', name: 'gen1', persistent: true });
    await qmp.transaction([
      actions.bitmapDisable({ node: 'disk', name: 'gen1' }),
      actions.bitmapAdd({ node: 'disk', name: 'gen2', persistent: true }),
    ]);
    const b = await bitmaps('disk');
    expect(b.get('gen1')?.recording).toBe(false);
    expect(b.get('gen2')).toMatchObject({ recording: true, persistent: true });
  });

  it('transaction(add + disable missing) fails with NOT_FOUND and rolls the add back', async () => {
    await expectCode(
      qmp.transaction([
        actions.bitmapAdd({ node: 'disk', name: 'rolled-back' }),
        actions.bitmapDisable({ node: 'disk', name: 'gen2' }),
        actions.bitmapDisable({ node: 'disk', name: 'no-such-bitmap' }),
      ]),
      'NOT_FOUND',
    );
    const b = await bitmaps('disk');
    expect(b.has('rolled-back')).toBe(false);
    expect(b.get('gen2')?.recording).toBe(true);
  });

  it('block-dirty-bitmap-merge(bitmaps: []) fails with INVALID_INPUT before reaching qemu, which would crash', async () => {
    await expectCode(qmp.execute('block-dirty-bitmap-merge', { node: 'disk', target: 'gen1', bitmaps: [] }), 'INVALID_INPUT');
    await expectCode(qmp.transaction([actions.bitmapMerge({ node: 'disk', target: 'gen1', bitmaps: [] })]), 'INVALID_INPUT');
    expect(daemon.exit).toBeUndefined();
    expect((await qmp.execute('query-version')).qemu).toEqual(qmp.greeting.version.qemu);
  });

  it('transaction(merge) of disabled bitmaps into a new disabled one works', async () => {
    await qmp.transaction([
      actions.bitmapAdd({ node: 'disk', name: 'merged', disabled: true }),
      actions.bitmapMerge({ node: 'disk', target: 'merged', bitmaps: ['gen1'] }),
      actions.bitmapClear({ node: 'disk', name: 'gen1' }),
    ]);
    const b = await bitmaps('disk');
    expect(b.get('merged')).toMatchObject({ recording: false, count: 0 });
    await qmp.execute('block-dirty-bitmap-remove', { node: 'disk', name: 'merged' });
  });
});

describe('QmpClient events', () => {
  const exportNode = async (id: string): Promise<void> => {
    await qmp.execute('block-export-add', { type: 'nbd', id, 'node-name': 'disk', name: id });
  };

  it('waitForEvent(BLOCK_EXPORT_DELETED) registered before block-export-del resolves with that export id', async () => {
    await exportNode('exp-a');
    expect((await qmp.execute('query-block-exports')).map((e) => e.id)).toContain('exp-a');
    const deleted = qmp.waitForEvent('BLOCK_EXPORT_DELETED', (e) => e.data.id === 'exp-a', { timeoutMs: 5_000 });
    await qmp.execute('block-export-del', { id: 'exp-a' });
    const event = await deleted;
    expect(event.data.id).toBe('exp-a');
    expect(typeof event.timestamp.seconds).toBe('number');
  });

  it('waitForEvent() created before execute never misses the event across 20 rounds', async () => {
    for (let i = 0; i < 20; i++) {
      await exportNode(`exp-r${i}`);
      const deleted = qmp.waitForEvent('BLOCK_EXPORT_DELETED', (e) => e.data.id === `exp-r${i}`, { timeoutMs: 5_000 });
      await qmp.execute('block-export-del', { id: `exp-r${i}` });
      expect((await deleted).data.id).toBe(`exp-r${i}`);
    }
  });

  it('waitForEvent() created after block-export-del returned misses it: qemu 7.2 sends the event before the reply', async () => {
    await exportNode('exp-late');
    await qmp.execute('block-export-del', { id: 'exp-late' });
    await expectCode(qmp.waitForEvent('BLOCK_EXPORT_DELETED', (e) => e.data.id === 'exp-late', { timeoutMs: 200 }), 'UNAVAILABLE');
  });

  it('on(name) and events() both deliver BLOCK_EXPORT_DELETED; unsubscribe stops delivery', async () => {
    const seen: string[] = [];
    const off = qmp.on('BLOCK_EXPORT_DELETED', (e) => seen.push(e.data.id));
    const iterator = qmp.events({ names: ['BLOCK_EXPORT_DELETED'] });
    await exportNode('exp-b');
    await qmp.execute('block-export-del', { id: 'exp-b' });
    const first = await iterator.next();
    expect((first.value as QmpEvent<'BLOCK_EXPORT_DELETED'>).data.id).toBe('exp-b');
    expect(seen).toEqual(['exp-b']);
    off();
    await iterator.return?.();
    await exportNode('exp-c');
    const deleted = qmp.waitForEvent('BLOCK_EXPORT_DELETED', (e) => e.data.id === 'exp-c');
    await qmp.execute('block-export-del', { id: 'exp-c' });
    await deleted;
    expect(seen).toEqual(['exp-b']);
    expect((await iterator.next()).done).toBe(true);
  });

  it('waitForEvent() with an aborted signal fails with CANCELLED', async () => {
    const ac = new AbortController();
    const waiting = qmp.waitForEvent('BLOCK_JOB_COMPLETED', undefined, { signal: ac.signal });
    ac.abort();
    await expectCode(waiting, 'CANCELLED');
  });
});

describe('QmpClient jobs (fleecing flow)', () => {
  it('transaction(bitmap add + disable + blockdev-backup sync=none) starts a job; block-job-cancel ends it with BLOCK_JOB_CANCELLED', async () => {
    const overlay = await createQcow2(dir, 'fleece.qcow2', SIZE);
    await qmp.execute('block-dirty-bitmap-add', { node: 'disk', name: 'fl-old' });
    await qmp.execute('blockdev-add', {
      driver: 'qcow2',
      'node-name': 'fleece',
      file: { driver: 'file', filename: overlay },
      backing: 'disk',
    });
    const statuses: string[] = [];
    const jobEvents = qmp.events({ names: ['JOB_STATUS_CHANGE'] });
    await qmp.transaction([
      actions.bitmapAdd({ node: 'disk', name: 'fl-new' }),
      actions.bitmapDisable({ node: 'disk', name: 'fl-old' }),
      actions.blockdevBackup({ 'job-id': 'fleece-job', device: 'disk', target: 'fleece', sync: 'none' }),
    ]);
    const jobs = await qmp.execute('query-block-jobs');
    expect(jobs.find((j) => j.device === 'fleece-job')).toMatchObject({ type: 'backup', status: 'running' });
    expect((await qmp.execute('query-jobs')).map((j) => j.id)).toContain('fleece-job');

    await qmp.execute('block-export-add', { type: 'nbd', id: 'fleece-exp', 'node-name': 'fleece', bitmaps: ['fl-old'] });
    const exportGone = qmp.waitForEvent('BLOCK_EXPORT_DELETED', (e) => e.data.id === 'fleece-exp');
    await qmp.execute('block-export-del', { id: 'fleece-exp' });
    await exportGone;

    const cancelled = qmp.waitForEvent('BLOCK_JOB_CANCELLED', (e) => e.data.device === 'fleece-job');
    await qmp.execute('block-job-cancel', { device: 'fleece-job' });
    expect((await cancelled).data.type).toBe('backup');
    for await (const e of jobEvents) {
      const { id, status } = (e as QmpEvent<'JOB_STATUS_CHANGE'>).data;
      if (id !== 'fleece-job') continue;
      statuses.push(status);
      if (status === 'null') break;
    }
    expect(statuses[0]).toBe('created');
    expect(statuses).toContain('running');
    expect(statuses.at(-1)).toBe('null');
    expect(await qmp.execute('query-block-jobs')).toEqual([]);

    await qmp.execute('blockdev-del', { 'node-name': 'fleece' });
    const left = await bitmaps('disk');
    expect(left.get('fl-old')?.recording).toBe(false);
    expect(left.get('fl-new')?.recording).toBe(true);
    await qmp.transaction([
      actions.bitmapRemove({ node: 'disk', name: 'fl-old' }),
      actions.bitmapRemove({ node: 'disk', name: 'fl-new' }),
    ]);
  });

  it('block-job-cancel of a job that has just ended fails with NOT_FOUND (qemu: DeviceNotActive), as a cleanup racing the job needs', async () => {
    const copy = await createQcow2(dir, 'ended-copy.qcow2', SIZE);
    await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'ended-copy', file: { driver: 'file', filename: copy } });
    const completed = qmp.waitForEvent('BLOCK_JOB_COMPLETED', (e) => e.data.device === 'ended-job');
    await qmp.execute('blockdev-backup', { 'job-id': 'ended-job', device: 'disk', target: 'ended-copy', sync: 'full' });
    await completed;
    const err = await expectCode(qmp.execute('block-job-cancel', { device: 'ended-job' }), 'NOT_FOUND');
    expect(err.details).toMatchObject({ qmpClass: 'DeviceNotActive', qmpDesc: "Block job 'ended-job' not found" });
    await qmp.execute('blockdev-del', { 'node-name': 'ended-copy' });
  });
});
