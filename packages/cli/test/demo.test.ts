import { execFile } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cairn, cairnSpawn, MiB, removeDir, tempDir, jsonError } from './helpers.js';

describe('cairn demo', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  it('demo --json runs full + incremental, restores both byte-exact and exits 0', async () => {
    const r = await cairn(['demo', '--size', '4MiB', '--json'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.ok).toBe(true);
    expect(doc.volumeSize).toBe(4 * MiB);
    expect(doc.steps.map((s: { step: string }) => s.step)).toEqual(['full backup', 'incremental backup', 'restore of full', 'restore of incremental']);
    expect(doc.steps.filter((s: { check?: string }) => s.check === 'byte-exact')).toHaveLength(2);
    const [full, inc] = doc.steps;
    expect(full.bytesRead).toBeGreaterThan(0);
    expect(inc.bytesRead).toBeLessThan(full.bytesRead);
    expect(doc.kept).toBe(false);
    await expect(stat(doc.directory)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it("demo's job lines name no `cairn backup cancel`, which would look in another state directory than the demo's and answer NOT_FOUND", async () => {
    const r = await cairn(['demo', '--size', '2MiB'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    const started = r.stderr.split('\n').filter((line) => / job \S+ started/.test(line));
    expect(started).toHaveLength(4); // two backups, two restores
    for (const line of started) expect(line).not.toContain('cairn backup cancel');
  });

  it('demo prints a table with sizes, bytes read, bytes stored and time', async () => {
    const r = await cairn(['demo', '--size', '2MiB', '-q'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/STEP\s+SIZE\s+BYTES READ\s+BYTES STORED\s+TIME/);
    expect(r.stdout).toContain('byte-exact');
  });

  it('demo interrupted by SIGINT while it writes its volume exits 130 (CANCELLED) and removes its temporary directory', async () => {
    const tmp = await tempDir('cairn-demo-tmp-');
    try {
      // A volume large enough that the signal comes while its content is being written.
      const { child, exit } = cairnSpawn(['demo', '--size', '2GiB', '--json'], { cwd, env: { TMPDIR: tmp } });
      await new Promise<void>((resolve) => {
        let text = '';
        child.stderr!.on('data', (d: Buffer) => {
          text += d.toString();
          if (text.includes('created volume demo-disk')) resolve();
        });
      });
      child.kill('SIGINT');
      const r = await exit;
      expect(r.code, r.stderr).toBe(130);
      expect(jsonError(r).code).toBe('CANCELLED');
      expect(r.stdout).toBe('');
      expect(await readdir(tmp)).toEqual([]);
    } finally {
      await removeDir(tmp);
    }
  });

  it('demo --size 1MiB, the smallest size it takes, runs and restores both backups byte-exact', async () => {
    const r = await cairn(['demo', '--size', '1MiB', '--json'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, volumeSize: MiB });
  });

  it('demo --size 1000 fails with INVALID_INPUT (exit 2)', async () => {
    const r = await cairn(['demo', '--size', '1000', '--json'], { cwd });
    expect(r.code).toBe(2);
    expect(jsonError(r).code).toBe('INVALID_INPUT');
  });

  it('an unknown command exits 2 and --version exits 0', async () => {
    expect((await cairn(['frobnicate'], { cwd })).code).toBe(2);
    const v = await cairn(['--version'], { cwd });
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('with --json, a command group without its subcommand (or no command at all) exits 2 with the error document as the last line of stderr', async () => {
    for (const args of [['volume', '--json'], ['--json', 'backup'], ['--json']]) {
      const r = await cairn(args, { cwd });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(jsonError(r).code).toBe('INVALID_INPUT');
    }
  });

  it('the bin runs through its own shebang (env -S with the malloc setting and V8 flags)', async () => {
    const { stdout } = await promisify(execFile)(BIN, ['--version'], { cwd });
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const shebang = (await readFile(BIN, 'utf8')).split('\n')[0];
    expect(shebang).toBe('#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=4 --optimize-for-size');
  });
});
