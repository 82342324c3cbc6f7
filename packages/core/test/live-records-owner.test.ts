import { describe, expect, it } from 'vitest';
import type { BackupReader, BackupRecord } from '../src/contracts/records.js';
import { currentReaders } from '../src/flow/live-records.js';
import type { ProcessOwner } from '../src/util/process-owner.js';

/**
 * Contract (live-records.ts, currentReaders): a `restoring` record's readers count only when its
 * owner agrees with them, field by field of ProcessOwner (its optional fields equal, or absent on
 * both), the machine id included: an owner that names another machine is not the reader's.
 */
describe('currentReaders compares every owner field', () => {
  const reader: ProcessOwner = { host: 'localhost', pid: 4242, startTime: 777, bootId: 'boot-1', pidNamespace: 4026531836, machineId: 'machine-a' };
  const record = (owner: ProcessOwner, readers: BackupReader[]): Pick<BackupRecord, 'status' | 'owner' | 'readers'> => ({ status: 'restoring', owner, readers });
  const readers: BackupReader[] = [{ id: 'r1', owner: reader, since: '2024-01-01T00:00:00.000Z' }];

  it('counts the readers when the owner is the sole reader\'s (control)', () => {
    expect(currentReaders(record({ ...reader }, readers))).toEqual(readers);
  });

  it('does not count them when the owner differs in its machine id alone', () => {
    expect(currentReaders(record({ ...reader, machineId: 'machine-b' }, readers))).toBeUndefined();
  });

  it('does not count them when the owner differs in another field alone (control)', () => {
    expect(currentReaders(record({ ...reader, bootId: 'boot-2' }, readers))).toBeUndefined();
  });

  it('counts them when neither carries a machine id (owners written before it was kept)', () => {
    const { machineId: _m, ...older } = reader;
    expect(currentReaders(record({ ...older }, [{ ...readers[0]!, owner: older }]))).toEqual([{ ...readers[0]!, owner: older }]);
  });
});
