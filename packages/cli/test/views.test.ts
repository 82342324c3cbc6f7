import { describe, expect, it } from 'vitest';
import type { BackupRecord } from '@cairn/core';
import { backupText, verifyText } from '../src/output/views.js';

const record = (fields: Partial<BackupRecord>): BackupRecord => ({
  id: 'b1', name: '', description: '', volumeId: 'v1', volumeName: 'v', size: 1024, status: 'creating', service: 'posix',
  incremental: false, volumeMetadata: {}, serviceData: {}, createdAt: '2026-12-06T00:00:00.000Z', updatedAt: '2026-12-06T00:00:00.000Z',
  ...fields,
});

describe('backupText', () => {
  it("names an incremental's parent, and says when it has none yet (queued, or failed before it claimed one)", () => {
    expect(backupText(record({ incremental: true, parentId: 'p1' }))).toMatch(/type:\s+incremental of p1/);
    const queued = backupText(record({ incremental: true }));
    expect(queued).toMatch(/type:\s+incremental \(no parent claimed yet\)/);
    expect(queued).not.toContain('undefined');
    expect(backupText(record({}))).toMatch(/type:\s+full/);
  });
});

describe('verifyText', () => {
  it('names the backup a problem breaks, and calls one without a backup a repository problem', () => {
    const text = verifyText({
      checked: ['b1'],
      bytesChecked: 1024,
      problems: [
        { backupId: 'b1', code: 'NOT_FOUND', message: 'chunk x is in no pack' },
        { code: 'CORRUPT', message: 'index object index/ab cannot be read' },
      ],
    });
    expect(text.split('\n')).toEqual(['checked 1 backup(s), 1.0 KiB', 'problem [NOT_FOUND] backup b1: chunk x is in no pack', 'problem [CORRUPT] repository: index object index/ab cannot be read', '2 problem(s)']);
  });
});
