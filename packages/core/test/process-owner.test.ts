import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { currentOwner, ownerMayBeAlive, processStartTime } from '../src/util/process-owner.js';

/** An owner is host, pid and the kernel's start time of the pid: a reused pid does not keep a dead owner alive. */
describe('process owners', () => {
  it('names this process with its start time, boot id, pid namespace and machine id, and judges it alive', () => {
    const me = currentOwner();
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const pidNamespace = statSync('/proc/self/ns/pid').ino;
    const machineId = readFileSync('/etc/machine-id', 'utf8').trim();
    expect(me).toEqual({ host: hostname(), pid: process.pid, startTime: processStartTime(process.pid), bootId, pidNamespace, machineId });
    expect(me.startTime).toBeGreaterThan(0);
    expect(ownerMayBeAlive(me)).toBe(true);
  });

  it('takes a running pid with another start time for a dead owner (the pid was reused), also when the pid is this process', () => {
    const me = currentOwner();
    expect(ownerMayBeAlive({ ...me, startTime: me.startTime! - 1 })).toBe(false);
    const parent = { host: hostname(), pid: process.ppid, startTime: processStartTime(process.ppid) };
    expect(ownerMayBeAlive(parent)).toBe(true);
    expect(ownerMayBeAlive({ ...parent, startTime: parent.startTime! + 1 })).toBe(false);
  });

  it('judges an owner without a start time (written before it was kept) by its pid alone', () => {
    expect(ownerMayBeAlive({ host: hostname(), pid: process.ppid })).toBe(true);
    expect(ownerMayBeAlive({ host: hostname(), pid: 2 ** 22 + 4321 })).toBe(false);
  });

  it('never judges an owner on another host', () => {
    expect(ownerMayBeAlive({ host: `${hostname()}-elsewhere`, pid: 2 ** 22 + 4321, startTime: 1 })).toBe(true);
  });

  it('takes an exited process for a dead owner', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    const exited = once(child, 'exit');
    const owner = { host: hostname(), pid: child.pid!, startTime: processStartTime(child.pid!) };
    expect(owner.startTime).toBeGreaterThan(0);
    expect(ownerMayBeAlive(owner)).toBe(true);
    child.kill('SIGKILL');
    await exited;
    expect(ownerMayBeAlive(owner)).toBe(false);
  });
});
