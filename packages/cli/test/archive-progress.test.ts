import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archivedBackup, cairn, cairnJson, MiB, removeDir, tempDir } from './helpers.js';

/** The final progress line of each phase of `label` on stderr (stderr is not a terminal here): [phase, done, total]. */
function finalLines(stderr: string, label: string): Map<string, [string, string]> {
  const phases = new Map<string, [string, string]>();
  for (const m of stderr.matchAll(new RegExp(`^${label}: ([a-z ]+): (\\S+ \\S+) / (\\S+ \\S+) \\(\\d+%\\)$`, 'gm'))) phases.set(m[1]!, [m[2]!, m[3]!]);
  return phases;
}

/**
 * `backup export` and `backup import` report progress in bytes for each of their phases, as
 * `backup create` and `restore` do for theirs: `<command>: <phase>: <done> / <total> (<n>%)`.
 */
describe('backup export and import report byte progress in every phase', () => {
  let cwd: string;
  let archive: string;
  let backupId: string;

  beforeAll(async () => {
    cwd = await tempDir();
    ({ archive, backupId } = await archivedBackup(cwd, 12 * MiB));
  }, 120_000);
  afterAll(() => removeDir(cwd));

  it('export: restore, scan and write each end at their total', async () => {
    const r = await cairn(['backup', 'export', backupId, '--archive', join(cwd, 'p.tar')], { cwd });
    expect(r.code, r.stderr).toBe(0);
    const phases = finalLines(r.stderr, 'export');
    expect([...phases.keys()]).toEqual(['restore', 'scan', 'write']);
    // writeRawImage fills every byte: all three phases cover the whole 12 MiB.
    for (const [phase, [done, total]] of phases) expect([phase, done, total]).toEqual([phase, '12.0 MiB', '12.0 MiB']);
  }, 120_000);

  it('import: read (the archive into staging) and backup (into the repository) each end at their total', async () => {
    await cairnJson(['backup', 'delete', backupId], { cwd });
    const r = await cairn(['backup', 'import', archive], { cwd });
    expect(r.code, r.stderr).toBe(0);
    const phases = finalLines(r.stderr, 'import');
    expect([...phases.keys()]).toEqual(['read', 'backup']);
    for (const [phase, [done, total]] of phases) expect([phase, done, total]).toEqual([phase, '12.0 MiB', '12.0 MiB']);
  }, 120_000);
});
