/**
 * `npm run bench` end to end on a small image (bench/run.mjs): the peers get the same work and the
 * run checks what it prints. Needs the packages built, restic and borg (bench/setup.sh).
 * Run: `node --test bench/test/`.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const scratch = mkdtempSync(join(tmpdir(), 'cairn-bench-test-'));
let run, result, work, file;

before(() => {
  run = spawnSync(process.execPath, ['bench/run.mjs', '--size', '64M', '--settle', '0', '--keep', '--dir', scratch, '--results', scratch], { cwd: root, encoding: 'utf8', maxBuffer: 1 << 26 });
  work = /^work dir (\S+);/m.exec(run.stdout)?.[1];
  file = /^results: (\S+)$/m.exec(run.stdout)?.[1];
  result = file && JSON.parse(readFileSync(file, 'utf8'));
});
after(() => {
  rmSync(scratch, { recursive: true, force: true });
  // A run.mjs without --results writes into bench/results.
  if (file && !file.startsWith(scratch)) rmSync(file, { force: true });
});

const row = (prefix) => result.rows.find((r) => r.name.startsWith(prefix));

test('the run succeeds and prints every row', () => {
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual(result.rows.map((r) => Boolean(r.cairn) && Boolean(r.restic)), [true, false, true, true]);
});

test("the no-tracking incremental stores the day's changes itself, as restic's does", () => {
  const cbt = row('incremental, changed-block tracking').cairn.stored;
  const noCbt = row('incremental, no tracking').cairn.stored;
  assert.ok(cbt > 1e6, `CBT incremental stored ${cbt} bytes`);
  assert.ok(noCbt > 0.8 * cbt, `no-tracking incremental stored ${noCbt} bytes, the tracked one ${cbt}`);
});

test('restic restores the same (full) backup as Cairn, byte for byte', () => {
  const state = JSON.parse(readFileSync(join(work, 'state.json'), 'utf8'));
  const restored = execFileSync('sha256sum', [join(work, 'restic-restore', 'image.raw')], { encoding: 'utf8' }).split(' ')[0];
  assert.equal(restored, state.digests.full);
  assert.notEqual(state.digests.incremental, state.digests.full);
});

test("restic's and Cairn's restores are both on record with restic's writeback time, so the synced ratio can be computed", () => {
  const restic = row('restore').restic;
  assert.ok(restic.seconds > 0);
  assert.equal(typeof result.resticRestoreSyncSeconds, 'number');
  assert.ok(result.resticRestoreSyncSeconds >= 0);
  assert.equal(result.writeAlign, 65536);
});
