import { spawn } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cairnJson, removeDir, tempDir, writeQcow2DeploymentConfig } from './helpers.js';

/** Runs the binary with stdout on the open file descriptor `fd` (closed here once the child has it). */
function runWithStdout(fd: number, args: string[], cwd: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, CAIRN_CONFIG: undefined, CAIRN_DEBUG: undefined }, stdio: ['ignore', fd, 'pipe'] });
    closeSync(fd);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

/**
 * A FIFO's write end whose reader is already gone: a pipe closed before the command writes to it,
 * as `cairn volume list | true` gives once `true` has exited (every write is EPIPE), with no race.
 */
function closedPipe(dir: string): number {
  const fifo = join(dir, `pipe-${Math.random().toString(36).slice(2)}`);
  execFileSync('mkfifo', [fifo]);
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writer = openSync(fifo, constants.O_WRONLY);
  closeSync(reader);
  return writer;
}

/**
 * docs/cli.md, "Exit codes": a command whose stdout fails does not die of an unhandled 'error'
 * event (a stack, exit 1, its context not closed): a reader gone (EPIPE) ends it quietly with exit
 * 141, as SIGPIPE would; another failure (ENOSPC on /dev/full) is UNAVAILABLE, exit 6, one error
 * line and no stack. Either way the context is closed: the qcow2 driver's daemon and its runtime
 * directory are gone when the command ends.
 */
describe("a command whose stdout can't be written", () => {
  let cwd: string;
  beforeAll(async () => {
    cwd = await tempDir();
    await writeQcow2DeploymentConfig(cwd);
    await cairnJson(['volume', 'create', 'v', '--size', '1MiB'], { cwd });
  }, 60_000);
  afterAll(() => removeDir(cwd));

  for (const json of [false, true]) {
    it(`a closed pipe (EPIPE)${json ? ' with --json' : ''}: exit 141, nothing on stderr, the context closed`, async () => {
      const r = await runWithStdout(closedPipe(cwd), ['volume', 'list', ...(json ? ['--json'] : [])], cwd);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(141);
      expect(await readdir(join(cwd, 'run'))).toEqual([]);
    });
  }

  it('stdout on /dev/full (ENOSPC): UNAVAILABLE, exit 6, no stack, the context closed', async () => {
    const r = await runWithStdout(openSync('/dev/full', 'w'), ['volume', 'list', '--json'], cwd);
    expect(r.code, r.stderr).toBe(6);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    const e = JSON.parse(lines[0]!).error;
    expect(e).toMatchObject({ code: 'UNAVAILABLE', details: { errno: 'ENOSPC' } });
    expect(e.message).toContain('stdout');
    expect(e.hint).toBeUndefined(); // the full-file-system hint is about the repository and `repo gc`, not stdout
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(await readdir(join(cwd, 'run'))).toEqual([]);
  });

  it('export-record to stdout on /dev/full: UNAVAILABLE, exit 6', async () => {
    const vol = await cairnJson(['volume', 'list'], { cwd });
    expect(vol).toHaveLength(1);
    const backup = await cairnJson(['backup', 'create', 'v'], { cwd });
    const r = await runWithStdout(openSync('/dev/full', 'w'), ['backup', 'export-record', backup.id], cwd);
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toMatch(/^error \[UNAVAILABLE\]: .*stdout/m);
    expect(r.stderr).not.toMatch(/^hint:/m);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  }, 60_000);
});
