import { describe, expect, it } from 'vitest';
import { qmpError, qmpErrorCode } from '../src/index.js';

// Descriptions as qemu-storage-daemon 7.2 sent them on this machine.
const observed: [string, string, string][] = [
  ['CommandNotFound', 'The command nope has not been found', 'NOT_SUPPORTED'],
  ['KVMMissingCap', 'Using KVM without required capability', 'NOT_SUPPORTED'],
  ['DeviceNotFound', "Device 'x' not found", 'NOT_FOUND'],
  ['DeviceNotActive', "Block job 'zz' not found", 'NOT_FOUND'],
  ['GenericError', "Failed to find node with node-name='x'", 'NOT_FOUND'],
  ['GenericError', "Cannot find device='nonode' nor node-name='nonode'", 'NOT_FOUND'],
  ['GenericError', "Dirty bitmap 'nob' not found", 'NOT_FOUND'],
  ['GenericError', "Export 'nope' is not found", 'NOT_FOUND'],
  ['GenericError', "Could not open '/tmp/x/nofile.qcow2': No such file or directory", 'NOT_FOUND'],
  ['GenericError', 'Bitmap already exists: b0', 'ALREADY_EXISTS'],
  ['GenericError', "Duplicate nodes with node-name='f'", 'ALREADY_EXISTS'],
  ['GenericError', "Block export id 'e1' is already in use", 'ALREADY_EXISTS'],
  ['GenericError', "Bitmap 'b0' is inconsistent and cannot be used", 'CORRUPT'],
  ['GenericError', 'Block device f is in use', 'CONFLICT'],
  ['GenericError', 'Failed to get "write" lock', 'BUSY'],
  ['GenericError', 'Failed to get shared "write" lock', 'BUSY'],
  ['GenericError', 'Failed to get "consistent read" lock', 'BUSY'],
  ['GenericError', 'Failed to lock byte 100', 'BUSY'],
  ['GenericError', "Bitmap 'b0' is currently in use by another operation and cannot be used", 'CONFLICT'],
  ['GenericError', "Permission conflict on node 'f': permissions 'write, resize' are both required", 'CONFLICT'],
  ['GenericError', 'NBD server already running', 'CONFLICT'],
  ['GenericError', "Invalid parameter type for 'persistent', expected: boolean", 'INVALID_INPUT'],
  ['GenericError', "Parameter 'file' is missing", 'INVALID_INPUT'],
  ['GenericError', "Enabled bitmap 'b0' incompatible with readonly export", 'INVALID_INPUT'],
  ['GenericError', "Invalid parameter 'locking'", 'INVALID_INPUT'],
  ['SomeFutureClass', 'whatever', 'INTERNAL'],
  // What qemu quotes is not its own words: names and paths may hold any.
  ['GenericError', "Could not open '/srv/lock/disk.qcow2': Permission denied", 'INVALID_INPUT'],
  ['GenericError', "Could not open '/data/in use/disk.qcow2': Is a directory", 'INVALID_INPUT'],
  ['GenericError', "Could not open '/srv/not found/disk.qcow2': Permission denied", 'INVALID_INPUT'],
  ['GenericError', "Image '/srv/corrupt/a.qcow2' is not in qcow2 format", 'INVALID_INPUT'],
  ['GenericError', "Could not open '/srv/lock/x.qcow2': No such file or directory", 'NOT_FOUND'],
];

describe('qmpErrorCode', () => {
  it.each(observed)('qmpErrorCode(%s, %j) returns %s', (qmpClass, desc, code) => {
    expect(qmpErrorCode(qmpClass, desc)).toBe(code);
  });

  it('qmpError(command, body) keeps class, desc and command in details', () => {
    const err = qmpError('blockdev-del', { class: 'GenericError', desc: 'Node q is in use' });
    expect(err.code).toBe('CONFLICT');
    expect(err.details).toEqual({ command: 'blockdev-del', qmpClass: 'GenericError', qmpDesc: 'Node q is in use' });
    expect(err.driver).toBe('qmp');
  });
});
