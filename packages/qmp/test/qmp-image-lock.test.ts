// An image another qemu process has open read-write is locked by it (file-posix's OFD locks): a
// second daemon's blockdev-add fails with qemu's 'Failed to get "write" lock'. That is another
// process holding the image, which a later retry may get past: BUSY, as Cairn reports other
// locks (volume-file, the repository), not CONFLICT (a state of this daemon) nor INTERNAL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuStorageDaemon, type BlockdevOptionsQcow2 } from '../src/index.js';
import { createQcow2, expectCode, removeDir, tempDir } from './helpers.js';

let dir: string;
let image: string;
const daemons: QemuStorageDaemon[] = [];

beforeAll(async () => {
  dir = await tempDir();
  image = await createQcow2(dir, 'locked.qcow2', 1024 * 1024);
});

afterAll(async () => {
  for (const d of daemons) await d.stop();
  await removeDir(dir);
});

const qcow2 = (nodeName: string): BlockdevOptionsQcow2 => ({ driver: 'qcow2', 'node-name': nodeName, file: { driver: 'file', filename: image } });

describe('blockdev-add of an image another daemon holds', () => {
  it('fails with BUSY (qemu\'s "Failed to get \\"write\\" lock"), and succeeds once the holder let go', async () => {
    const holder = await QemuStorageDaemon.start();
    const other = await QemuStorageDaemon.start();
    daemons.push(holder, other);
    await holder.qmp.execute('blockdev-add', qcow2('held'));

    const err = await expectCode(other.qmp.execute('blockdev-add', qcow2('wanted')), 'BUSY');
    expect(err.details).toMatchObject({ command: 'blockdev-add', qmpClass: 'GenericError' });
    expect(String(err.details?.qmpDesc)).toMatch(/lock/);

    await holder.qmp.execute('blockdev-del', { 'node-name': 'held' });
    await other.qmp.execute('blockdev-add', qcow2('wanted'));
    const nodes = await other.qmp.execute('query-named-block-nodes', { flat: true });
    expect(nodes.map((n) => n['node-name'])).toContain('wanted');
  });
});
