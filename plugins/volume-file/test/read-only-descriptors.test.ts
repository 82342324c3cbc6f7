import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { childrenPerTest, driverPerTest, haveStrace } from './helpers.js';

const MiB = 1024 * 1024;
const built = fileURLToPath(new URL('../dist/index.js', import.meta.url));

/** How each descriptor process `pid` has open on `path` was opened: r, w or rw (/proc/<pid>/fdinfo). */
function accessModes(pid: number, path: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target = '';
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    if (target !== path) continue;
    const flags = parseInt(/flags:\s*(\d+)/.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))![1]!, 8);
    out.push(['r', 'w', 'rw'][flags & 3]!);
  }
  return out.sort();
}

/**
 * Contract (file-lock.ts, lockFile): a shared lock is taken on a read-only descriptor, so a reader
 * holds no writable descriptor on the files it locks — the image of a read-only attachment, the
 * `.writer` file a status probe tries. A writable descriptor there makes `mount -o remount,ro`
 * fail EBUSY for as long as a backup reads, makes overlayfs copy the image up, and makes inotify
 * report IN_CLOSE_WRITE at every read-only detach and every status poll. Exclusive locks (a
 * read-write attach) are on writable descriptors (NFS needs them) and still exclude other processes.
 */
describe('read-only attachments and status probes open nothing for writing', () => {
  const t = driverPerTest();
  const children = childrenPerTest();

  it('a read-only attachment in another process holds the image only through read-only descriptors; a read-write attach there still conflicts', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const image = join(t.dir, 'volumes', `${v.id}.img`);
    const reader = children.holder(t.dir, v.id, 'ro');
    expect(await reader.ready).toBe('attached');
    const modes = accessModes(reader.child.pid!, image);
    expect(modes.length).toBeGreaterThanOrEqual(2); // its device and its shared lock
    expect(modes).toEqual(modes.map(() => 'r'));
    // The shared lock still keeps writers out, across processes.
    const writer = children.holder(t.dir, v.id, 'rw');
    expect(await writer.ready).toBe('error BUSY');
    expect(await reader.stop()).toBe(0);
  });

  it('a read-write attachment in another process holds its image and writer lock writable, and excludes a second writer', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const holder = children.holder(t.dir, v.id, 'rw');
    expect(await holder.ready).toBe('attached');
    const pid = holder.child.pid!;
    expect(accessModes(pid, join(t.dir, 'volumes', `${v.id}.img`))).toEqual(['rw', 'rw']); // its device and its exclusive lock
    expect(accessModes(pid, join(t.dir, 'volumes', `${v.id}.writer`))).toEqual(['rw']);
    await expect(t.driver.attach({ kind: 'volume', id: v.id }, 'rw')).rejects.toMatchObject({ code: 'BUSY' });
    await expect(t.driver.attach({ kind: 'volume', id: v.id }, 'ro')).rejects.toMatchObject({ code: 'BUSY' });
    expect(await holder.stop()).toBe(0);
  });

  it('a status poll (getVolume, listVolumes) of a volume attached read-write elsewhere, and a read-only attach and detach, open the writer lock and the image read-only only (strace)', async (ctx) => {
    if (!haveStrace()) return ctx.skip('strace cannot run here');
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const holder = children.holder(t.dir, v.id, 'rw');
    expect(await holder.ready).toBe('attached');
    const trace = join(t.dir, 'trace');
    const script = `const { FileVolumeDriver } = await import(${JSON.stringify(built)});
      const [directory, id] = process.argv.slice(1);
      const d = new FileVolumeDriver({ directory });
      const statuses = [(await d.getVolume(id)).status, ...(await d.listVolumes()).map((x) => x.status)];
      console.log(statuses.join(' '));`;
    const { stdout } = await promisify(execFile)('strace', ['-f', '-e', 'trace=open,openat', '-o', trace, process.execPath, '--input-type=module', '-e', script, t.dir, v.id]);
    expect(stdout.trim()).toBe('in-use in-use');
    const opens = (await readFile(trace, 'utf8')).split('\n').filter((l) => l.includes(`${v.id}.writer`) || l.includes(`${v.id}.img`));
    expect(opens.length).toBe(2); // one probe of the writer lock each
    for (const l of opens) expect(l).toMatch(/O_RDONLY/);
    expect(await holder.stop()).toBe(0);

    // A read-only attach and detach: every open of the image read-only (so no IN_CLOSE_WRITE at detach).
    const ro = `const { FileVolumeDriver } = await import(${JSON.stringify(built)});
      const [directory, id] = process.argv.slice(1);
      const d = new FileVolumeDriver({ directory });
      const a = await d.attach({ kind: 'volume', id }, 'ro');
      await a.device.read(0, 4096);
      await d.detach(a.id);
      console.log('done');`;
    const r = await promisify(execFile)('strace', ['-f', '-e', 'trace=open,openat', '-o', trace, process.execPath, '--input-type=module', '-e', ro, t.dir, v.id]);
    expect(r.stdout.trim()).toBe('done');
    const imageOpens = (await readFile(trace, 'utf8')).split('\n').filter((l) => l.includes(`${v.id}.img`) || l.includes(`${v.id}.writer`));
    expect(imageOpens.length).toBeGreaterThanOrEqual(2);
    for (const l of imageOpens) expect(l).toMatch(/O_RDONLY/);
  });
});
