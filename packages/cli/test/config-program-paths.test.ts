import { describe, expect, it } from 'vitest';
import { fromText } from '../src/config/load.js';

/**
 * docs/cli.md, "Config": every relative path in a config is relative to its directory, also the
 * qcow2 driver's `qemuImg` and `qemuStorageDaemon` when they are paths (hold a slash); a bare
 * program name stays one, to be found on PATH.
 */
describe('qemuImg and qemuStorageDaemon in a config', () => {
  const load = (options: Record<string, unknown>) =>
    fromText('/etc/cairn/cairn.config.json', JSON.stringify({ volumeDrivers: { q: { plugin: 'qcow2', options: { directory: 'images', ...options } } }, targets: { t: { plugin: 'posix', options: { directory: '/r' } } } })).config.volumeDrivers.q!.options;

  it('a relative path is resolved against the config file, not the working directory', () => {
    expect(load({ qemuImg: 'bin/qemu-img', qemuStorageDaemon: './qsd' })).toMatchObject({ qemuImg: '/etc/cairn/bin/qemu-img', qemuStorageDaemon: '/etc/cairn/qsd' });
    expect(load({ qemuImg: '../opt/qemu-img' }).qemuImg).toBe('/etc/opt/qemu-img');
  });

  it('a bare name stays a name (looked up on PATH), an absolute path stays as it is', () => {
    expect(load({ qemuImg: 'qemu-img', qemuStorageDaemon: 'qemu-storage-daemon' })).toMatchObject({ qemuImg: 'qemu-img', qemuStorageDaemon: 'qemu-storage-daemon' });
    expect(load({ qemuImg: '/usr/local/bin/qemu-img' }).qemuImg).toBe('/usr/local/bin/qemu-img');
  });
});
