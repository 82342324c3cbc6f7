/**
 * `volume import` / `volume export` with a qemu-img hung on dead storage. Here the qemu-img on
 * PATH is a wrapper that, for the command named in its `freeze` file, writes its pid and SIGSTOPs
 * itself (a process stopped in I/O makes no progress either), then would exec the real qemu-img.
 * Metadata runs (`info`, `check`) must fail after CAIRN_QEMU_IMG_TIMEOUT_MS, a `convert` after
 * CAIRN_QEMU_IMG_STALL_MS without progress (each set short only for the run that freezes):
 * `UNAVAILABLE` (exit 6) naming the command, the frozen child gone, no temporary file (each run
 * gets a TMPDIR of its own, checked empty), no volume.
 */
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, tempDir, writeRawImage, type CliResult } from './helpers.js';

/** Whether the process `pid` still exists (a reaped child is gone). */
const exists = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The bound of the frozen qemu-img run (ms): what the command waits before it gives up on it. */
const SHORT_BOUND_MS = '5000';

describe('volume import/export with a hung qemu-img', () => {
  let cwd: string;
  let tmp: string;
  let bin: string;
  let raw: string;
  let image: string;
  const frozen: number[] = [];
  beforeAll(async () => {
    cwd = await tempDir();
    tmp = join(cwd, 'tmp');
    bin = join(cwd, 'bin');
    await mkdir(tmp);
    await mkdir(bin);
    raw = join(cwd, 'data.raw');
    await writeRawImage(raw, 4 * MiB);
    image = join(cwd, 'data.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, image], { stdio: 'ignore' });
    const real = execFileSync('sh', ['-c', 'command -v qemu-img'], { encoding: 'utf8' }).trim();
    await writeFile(
      join(bin, 'qemu-img'),
      ['#!/bin/sh', `ctl='${cwd}'`, 'if [ "$1" = "$(cat "$ctl/freeze" 2>/dev/null)" ]; then echo $$ > "$ctl/pid"; kill -STOP $$; fi', `exec '${real}' "$@"`, ''].join('\n'),
    );
    await chmod(join(bin, 'qemu-img'), 0o755);
    await cairnJson(['volume', 'import', raw, '--name', 'source'], { cwd });
  });
  afterEach(async () => {
    // Our own frozen children only, should a run have left one.
    for (const pid of frozen.splice(0)) if (exists(pid)) process.kill(pid, 'SIGKILL');
    await rm(join(cwd, 'freeze'), { force: true });
    await rm(join(cwd, 'pid'), { force: true });
  });
  afterAll(() => removeDir(cwd));

  /**
   * Runs the CLI with the wrapper first on PATH and `command` armed to freeze. Only the bound that
   * governs the frozen command is short (the timeout for `info` and `check`, the stall window for
   * `convert`); the other keeps its two-minute default, so the runs that are not frozen (the
   * `info` before a frozen `check`, the metadata runs before a frozen `convert`) are never cut
   * short by a slow machine. SHORT_BOUND_MS must still cover what runs under it before the
   * freeze: the wrapper's start up to its `echo $$ > pid` (and, for `check`, a real `info`); from
   * 3 s up runBounded's kill grace is its full 3 s too.
   */
  const runFrozen = async (command: string, args: string[]): Promise<CliResult> => {
    await writeFile(join(cwd, 'freeze'), command);
    const bound = command === 'convert' ? { CAIRN_QEMU_IMG_STALL_MS: SHORT_BOUND_MS } : { CAIRN_QEMU_IMG_TIMEOUT_MS: SHORT_BOUND_MS };
    return cairn([...args, '--json'], { cwd, env: { TMPDIR: tmp, PATH: `${bin}:${process.env.PATH}`, ...bound } });
  };
  /** The run failed UNAVAILABLE (exit 6) naming `qemu-img <command>`, and the child that froze is gone. */
  const expectHangReported = async (r: CliResult, command: string): Promise<void> => {
    // The wrapper writes its pid before it stops itself and is killed only once the bound ran
    // out, so once the run has ended the file is there, or the wrapper never got to freeze.
    const pidText = await readFile(join(cwd, 'pid'), 'utf8').catch(() => '');
    expect(pidText, `the qemu-img ${command} wrapper was killed before it froze (bound ${SHORT_BOUND_MS} ms); ${r.stderr}`).toMatch(/^\d+\n$/);
    const pid = Number(pidText.trim());
    frozen.push(pid);
    expect(r.code, r.stderr).toBe(6);
    const e = jsonError(r);
    expect(e.code).toBe('UNAVAILABLE');
    expect(e.message).toContain(`qemu-img ${command}`);
    expect(e.details).toMatchObject({ command: `qemu-img ${command}`, exited: true });
    expect(exists(pid), 'the frozen qemu-img still exists').toBe(false);
  };
  const volumeNames = async (): Promise<string[]> => (await cairnJson(['volume', 'list'], { cwd })).map((v: { name: string }) => v.name);

  for (const command of ['info', 'check', 'convert']) {
    it(`import: a qemu-img ${command} that hangs fails UNAVAILABLE naming it, with no temporary file and no volume`, async () => {
      const name = `hung-${command}`;
      const r = await runFrozen(command, ['volume', 'import', image, '--name', name]);
      await expectHangReported(r, command);
      expect(await readdir(tmp)).toEqual([]); // the import's own cairn-import-* directory is gone
      expect(await volumeNames()).not.toContain(name);
    });
  }

  it('export: a qemu-img convert that hangs fails UNAVAILABLE naming it, with no temporary file and no output', async () => {
    const out = join(cwd, 'out');
    await mkdir(out);
    const r = await runFrozen('convert', ['volume', 'export', 'source', join(out, 'x.qcow2')]);
    await expectHangReported(r, 'convert');
    expect(await readdir(out)).toEqual([]);
    expect(await readdir(tmp)).toEqual([]);
  });

  it('a bound that is not a whole number of milliseconds is INVALID_INPUT naming the variable', async () => {
    const r = await cairn(['volume', 'import', image, '--name', 'bad-bound', '--json'], { cwd, env: { TMPDIR: tmp, CAIRN_QEMU_IMG_TIMEOUT_MS: '1e3' } });
    expect(r.code, r.stderr).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('CAIRN_QEMU_IMG_TIMEOUT_MS') });
  });
});
