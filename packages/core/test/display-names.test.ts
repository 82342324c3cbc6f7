import { describe, expect, it } from 'vitest';
import { filledVolume, rig } from './helpers.js';
import { assertDescription, assertDisplayName, CairnError } from '../src/index.js';

/** The error `fn` throws (fails the test when it throws none or not a CairnError). */
function thrown(fn: () => void): CairnError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CairnError);
    return err as CairnError;
  }
  throw new Error('expected a throw');
}

const CONTROLS = ['\u0000', '\u0007', '\t', '\n', '\r', '\u001b', '\u001f', '\u007f', '\u0080', '\u0085', '\u009f'];

describe('assertDisplayName', () => {
  it('assertDisplayName(name of 1–255 code points without control characters) passes', () => {
    for (const name of ['x', 'a'.repeat(255), '\u{1F600}'.repeat(255), 'disk 1 (prod) — ünïcødé', ' ', '\u00a0nbsp']) {
      expect(() => assertDisplayName(name, 'name')).not.toThrow();
    }
  });

  it('assertDisplayName(empty, too long, control character or non-string) throws INVALID_INPUT with details.field and reason', () => {
    const cases: [unknown, string][] = [
      ['', 'empty'],
      ['a'.repeat(256), 'too_long'],
      ['a'.repeat(5000), 'too_long'],
      ['\u{1F600}'.repeat(256), 'too_long'],
      [42, 'not_string'],
      [null, 'not_string'],
      ...CONTROLS.map((c): [string, string] => [`a${c}b`, 'control_character']),
    ];
    for (const [value, reason] of cases) {
      const err = thrown(() => assertDisplayName(value, 'name', 'memory'));
      expect(err.code, JSON.stringify(value)).toBe('INVALID_INPUT');
      expect(err.details, JSON.stringify(value)).toMatchObject({ field: 'name', reason });
      expect(err.driver).toBe('memory');
    }
  });
});

describe('assertDescription', () => {
  it('assertDescription(empty, multi-line with tabs, 255 code points) passes', () => {
    for (const text of ['', 'line one\nline two\tcol', 'a'.repeat(255)]) {
      expect(() => assertDescription(text, 'description')).not.toThrow();
    }
  });

  it('assertDescription(too long or control character other than \\n and \\t) throws INVALID_INPUT', () => {
    for (const text of ['a'.repeat(256), ...CONTROLS.filter((c) => c !== '\n' && c !== '\t').map((c) => `a${c}b`)]) {
      const err = thrown(() => assertDescription(text, 'description'));
      expect(err.code).toBe('INVALID_INPUT');
      expect(err.details).toMatchObject({ field: 'description' });
    }
  });
});

describe('BackupManager.backup names', () => {
  it('backup({name with a newline | 256 chars | empty}) and backup({description with \\r}) fail with INVALID_INPUT and record nothing', async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes);
    const bad = [{ name: 'a\nb' }, { name: 'n'.repeat(256) }, { name: '' }, { description: 'a\rb' }, { description: 'd'.repeat(256) }];
    for (const fields of bad) {
      const err = await manager.backup({ volumeId: v.id, ...fields }).then(() => undefined, (e: unknown) => e as CairnError);
      expect(err?.code, JSON.stringify(fields)).toBe('INVALID_INPUT');
      expect(err?.details?.field).toBe(Object.keys(fields)[0]);
    }
    expect(await manager.listBackups()).toEqual([]);
  });

  it('backup({name of 255 chars, multi-line description}) keeps both', async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes);
    const b = await manager.backup({ volumeId: v.id, name: 'n'.repeat(255), description: 'first line\n\tsecond' });
    expect(b).toMatchObject({ status: 'available', name: 'n'.repeat(255), description: 'first line\n\tsecond' });
  });
});

describe('BackupManager.startRestore names', () => {
  it('startRestore({newVolume: {name with a newline | 256 chars | empty}}) fails with INVALID_INPUT (field newVolume.name) before the driver is asked for a volume', async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes);
    const b = await manager.backup({ volumeId: v.id });
    const create = volumes.createVolume.bind(volumes);
    let creates = 0;
    volumes.createVolume = (spec) => (creates++, create(spec));
    for (const name of ['a\nb', 'n'.repeat(256), '']) {
      const err = await manager.startRestore({ backupId: b.id, newVolume: { name } }).then(() => undefined, (e: unknown) => e as CairnError);
      expect(err?.code, JSON.stringify(name)).toBe('INVALID_INPUT');
      expect(err?.details?.field).toBe('newVolume.name');
    }
    expect(creates).toBe(0);
    expect((await volumes.listVolumes()).map((x) => x.id)).toEqual([v.id]);
  });
});
