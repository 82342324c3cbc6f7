/**
 * A pid means something only in its pid namespace and a start time only within its boot: owners
 * of another pid namespace under this host name (containers started with `--network host`) are
 * never judged from here, and owners of an earlier boot of this host are gone. Another machine
 * id under this host name is another machine (two VMs called `localhost`, sharing a repository):
 * never judged from here either, whatever its boot id.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { describe, expect, it, vi } from 'vitest';
import { MemoryObjectStore, type ProcessOwner } from '../src/index.js';
import { RepositoryLocks } from '../src/repository/repository-locks.js';
import { currentOwner, ownerLocation, ownerMayBeAlive, processStartTime } from '../src/util/process-owner.js';
import { filledVolume, rig } from './helpers.js';

/** A pid no process has here (above the kernel's pid limit). */
const NO_SUCH_PID = 2 ** 22 + 4321;

const me = currentOwner();
/** Another container under this host name: same kernel (boot), another pid namespace. */
const otherNamespace = { host: hostname(), bootId: me.bootId, pidNamespace: me.pidNamespace! + 1 };
/** An earlier boot of this host. */
const earlierBoot = { host: hostname(), bootId: 'an-earlier-boot', pidNamespace: me.pidNamespace };
/** Another machine under this host name: its own machine id and boot. */
const otherMachine = { host: hostname(), bootId: 'another-machines-boot', pidNamespace: me.pidNamespace, machineId: `not-${me.machineId}` };
/** The parent process as this process sees it: alive, in this namespace. */
const parent = (): ProcessOwner => ({ host: hostname(), pid: process.ppid, startTime: processStartTime(process.ppid), bootId: me.bootId, pidNamespace: me.pidNamespace });

describe('owners in pid namespaces and boots', () => {
  it('this process has a boot id, a pid namespace and a machine id to compare (else the cases below prove nothing)', () => {
    expect(me.bootId).toMatch(/^[0-9a-f-]{36}$/);
    expect(me.pidNamespace).toBeGreaterThan(0);
    expect(me.machineId).toBe(readFileSync('/etc/machine-id', 'utf8').trim());
    expect(me.machineId).toMatch(/^[0-9a-f]{32}$/);
  });

  it('ownerLocation(an owner of another machine id under this host name) is elsewhere under another boot id; of this machine id or none, another boot is past-boot', () => {
    expect(ownerLocation({ ...otherMachine, pid: 1 })).toBe('elsewhere');
    expect(ownerLocation({ ...otherMachine, bootId: me.bootId, pid: 1 })).toBe('here'); // one kernel: a container whose image carries a machine id of its own
    expect(ownerLocation({ ...otherMachine, bootId: undefined, pid: 1 })).toBe('elsewhere');
    expect(ownerLocation({ ...otherMachine, machineId: me.machineId, pid: 1 })).toBe('past-boot');
    expect(ownerLocation({ ...otherMachine, machineId: undefined, pid: 1 })).toBe('past-boot'); // written before machine ids were kept
    expect(ownerLocation({ ...parent(), machineId: me.machineId })).toBe('here');
  });

  it('ownerMayBeAlive(an owner of another machine under this host name) is true, whatever its pid names here; an earlier boot of this machine is dead', () => {
    expect(ownerMayBeAlive({ ...otherMachine, pid: NO_SUCH_PID, startTime: 1 })).toBe(true);
    const p = parent();
    expect(ownerMayBeAlive({ ...otherMachine, pid: p.pid, startTime: p.startTime! + 1 })).toBe(true); // the pid names another process here
    expect(ownerMayBeAlive({ ...otherMachine, pid: NO_SUCH_PID, startTime: 1, machineId: me.machineId })).toBe(false);
    expect(ownerMayBeAlive({ ...p, bootId: otherMachine.bootId, machineId: me.machineId })).toBe(false);
  });

  it('ownerLocation(owner) is here for this namespace and boot, elsewhere for another namespace or host, past-boot for another boot', () => {
    expect(ownerLocation(me)).toBe('here');
    expect(ownerLocation({ ...otherNamespace, pid: 1 })).toBe('elsewhere');
    expect(ownerLocation({ ...me, host: `${hostname()}-elsewhere`, bootId: 'x', pidNamespace: 1 })).toBe('elsewhere');
    expect(ownerLocation({ ...earlierBoot, pid: 1 })).toBe('past-boot');
    expect(ownerLocation({ ...earlierBoot, pidNamespace: me.pidNamespace! + 1, pid: 1 })).toBe('past-boot'); // the whole boot is over
  });

  it('ownerMayBeAlive(an owner of another pid namespace) is true, whatever its pid names here', () => {
    expect(ownerMayBeAlive({ ...otherNamespace, pid: NO_SUCH_PID, startTime: 1 })).toBe(true);
    const p = parent();
    expect(ownerMayBeAlive({ ...otherNamespace, pid: p.pid, startTime: p.startTime! + 1 })).toBe(true); // the pid names another process here
    expect(ownerMayBeAlive({ ...otherNamespace, pid: process.pid })).toBe(true); // this pid, no start time
  });

  it('ownerMayBeAlive(an owner of this namespace and boot) judges it by pid and start time', () => {
    expect(ownerMayBeAlive(parent())).toBe(true);
    expect(ownerMayBeAlive({ ...parent(), pid: NO_SUCH_PID })).toBe(false);
    expect(ownerMayBeAlive({ ...parent(), startTime: parent().startTime! + 1 })).toBe(false);
  });

  it('ownerMayBeAlive(an owner of another boot of this host) is false, even when its pid and start time match a live process', () => {
    expect(ownerMayBeAlive({ ...parent(), bootId: earlierBoot.bootId })).toBe(false);
  });

  it('ownerMayBeAlive(an owner written without boot id and pid namespace) judges it by pid and start time, as before they were kept', () => {
    const { bootId: _b, pidNamespace: _n, ...old } = parent();
    expect(ownerMayBeAlive(old)).toBe(true);
    expect(ownerMayBeAlive({ ...old, startTime: old.startTime! + 1 })).toBe(false);
    expect(ownerMayBeAlive({ host: hostname(), pid: NO_SUCH_PID })).toBe(false);
  });

  it('ownerMayBeAlive() compares no field this process lacks (/proc without boot id or pid namespace)', async () => {
    vi.resetModules();
    vi.doMock('node:fs', async (importOriginal) => {
      const fs = await importOriginal<typeof import('node:fs')>();
      const unreadable = () => {
        throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
      };
      const hidden = ['/proc/sys/kernel/random/boot_id', '/etc/machine-id', '/var/lib/dbus/machine-id'];
      return { ...fs, readlinkSync: unreadable, readFileSync: ((path: string, ...rest: []) => (hidden.includes(path) ? unreadable() : fs.readFileSync(path, ...rest))) as typeof fs.readFileSync };
    });
    try {
      const fresh = await import('../src/util/process-owner.js');
      expect(fresh.currentOwner()).toEqual({ host: hostname(), pid: process.pid, startTime: processStartTime(process.pid) });
      expect(fresh.ownerMayBeAlive({ ...otherNamespace, pid: NO_SUCH_PID })).toBe(false);
      expect(fresh.ownerMayBeAlive({ ...earlierBoot, ...parent(), bootId: earlierBoot.bootId })).toBe(true);
      expect(fresh.ownerLocation({ ...otherMachine, pid: 1 })).toBe('here'); // no machine id (nor boot id, nor pid namespace) here to compare
    } finally {
      vi.doUnmock('node:fs');
      vi.resetModules();
    }
  });

  it('currentOwner() reads the machine id from /var/lib/dbus/machine-id when /etc/machine-id is unreadable or empty', async () => {
    const dbusId = 'd'.repeat(32);
    for (const etc of ['unreadable', 'empty'] as const) {
      vi.resetModules();
      vi.doMock('node:fs', async (importOriginal) => {
        const fs = await importOriginal<typeof import('node:fs')>();
        const etcMachineId = () => {
          if (etc === 'empty') return '\n';
          throw Object.assign(new Error('EACCES'), { code: 'EACCES' });
        };
        return { ...fs, readFileSync: ((path: string, ...rest: []) => (path === '/etc/machine-id' ? etcMachineId() : path === '/var/lib/dbus/machine-id' ? `${dbusId}\n` : fs.readFileSync(path, ...rest))) as typeof fs.readFileSync };
      });
      try {
        const fresh = await import('../src/util/process-owner.js');
        expect(fresh.currentOwner().machineId, etc).toBe(dbusId);
      } finally {
        vi.doUnmock('node:fs');
        vi.resetModules();
      }
    }
  });
});

describe('locks and records of another pid namespace', () => {
  const lockDoc = (id: string, owner: ProcessOwner) => ({ id, kind: 'shared', owner, purpose: 'backup in another container', createdAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 60_000).toISOString() });

  it('a live lock of another pid namespace is not stale and blocks an exclusive acquire (GC)', async () => {
    const store = new MemoryObjectStore('mem');
    const locks = new RepositoryLocks(store);
    await store.put('locks/theirs', Buffer.from(JSON.stringify(lockDoc('theirs', { ...otherNamespace, pid: NO_SUCH_PID, startTime: 1 }))));
    expect((await locks.list()).find((l) => l.id === 'theirs')?.stale).toBe(false);
    await expect(locks.acquire('exclusive', { purpose: 'gc' })).rejects.toMatchObject({ code: 'BUSY' });
    expect(await locks.breakLocks()).toEqual([]);
  });

  it('a live lock of another machine under this host name is not stale and blocks an exclusive acquire (GC)', async () => {
    const store = new MemoryObjectStore('mem');
    const locks = new RepositoryLocks(store);
    await store.put('locks/twin', Buffer.from(JSON.stringify(lockDoc('twin', { ...otherMachine, pid: NO_SUCH_PID, startTime: 1 }))));
    expect((await locks.list()).find((l) => l.id === 'twin')?.stale).toBe(false);
    await expect(locks.acquire('exclusive', { purpose: 'gc' })).rejects.toMatchObject({ code: 'BUSY' });
    expect(await locks.breakLocks()).toEqual([]);
  });

  it('a lock of this namespace whose pid is gone, or of an earlier boot, is stale and blocks nothing', async () => {
    const store = new MemoryObjectStore('mem');
    const locks = new RepositoryLocks(store);
    await store.put('locks/dead', Buffer.from(JSON.stringify(lockDoc('dead', { ...parent(), pid: NO_SUCH_PID }))));
    await store.put('locks/rebooted', Buffer.from(JSON.stringify(lockDoc('rebooted', { ...parent(), bootId: earlierBoot.bootId }))));
    expect((await locks.list()).map((l) => [l.id, l.stale]).sort()).toEqual([['dead', true], ['rebooted', true]]);
    const gc = await locks.acquire('exclusive', { purpose: 'gc' });
    await gc.release();
  });

  it('recover() leaves a record of another pid namespace or machine alone and fails those of a dead pid here and of an earlier boot', async () => {
    const { volumes, catalog, manager } = rig();
    const v = await filledVolume(volumes);
    const base = await manager.backup({ volumeId: v.id });
    await catalog.putBackup({ ...base, id: 'other-container', status: 'creating', owner: { ...otherNamespace, pid: NO_SUCH_PID, startTime: 1 } });
    await catalog.putBackup({ ...base, id: 'dead-here', status: 'creating', owner: { ...parent(), pid: NO_SUCH_PID } });
    await catalog.putBackup({ ...base, id: 'before-reboot', status: 'creating', owner: { ...parent(), bootId: earlierBoot.bootId } });
    await catalog.putBackup({ ...base, id: 'other-machine', status: 'creating', owner: { ...otherMachine, pid: NO_SUCH_PID, startTime: 1 } });
    const report = await manager.recover();
    expect(report.skipped.sort()).toEqual(['other-container', 'other-machine']);
    expect(report.failedBackups.sort()).toEqual(['before-reboot', 'dead-here']);
  });
});
