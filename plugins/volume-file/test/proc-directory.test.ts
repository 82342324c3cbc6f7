/**
 * A volumes directory where mkdir says ENOENT although the parent is there: /proc and its
 * per-process directories take no new entries, and a removed directory is still reached through
 * /proc/self/fd. Node 20's recursive mkdir retried that for ever (100% CPU, deaf to SIGTERM), so
 * the driver runs in a child process that is killed when it overruns.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, tempDir } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/create-volume.mjs', import.meta.url));
const built = fileURLToPath(new URL('../dist/index.js', import.meta.url));

/** Runs the fixture with `args`, SIGKILLed after `ms`; resolves with its JSON line, or `killed`. */
function createVolumeWithin(ms: number, args: string[]): Promise<{ killed: boolean; line: any; stderr: string }> {
  if (!existsSync(built)) throw new Error(`${built} is missing: run \`npx tsc -b plugins/volume-file\` first`);
  return new Promise((resolve) => {
    execFile(process.execPath, [fixture, ...args], { timeout: ms, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const killed = !!(err as { killed?: boolean } | null)?.killed;
      resolve({ killed, line: stdout.trim() ? JSON.parse(stdout.trim().split('\n')[0]!) : undefined, stderr });
    });
  });
}

describe('FileVolumeDriver in a directory that cannot be made', () => {
  let base: string;
  beforeAll(async () => (base = await tempDir()));
  afterAll(() => removeDir(base));

  it('createVolume with directory /proc/self/cairn-volumes (or deeper) fails at once with UNAVAILABLE naming the directory', async () => {
    for (const directory of ['/proc/self/cairn-volumes', '/proc/self/cairn-volumes/deeper']) {
      const r = await createVolumeWithin(10_000, [directory]);
      expect(r.killed, `createVolume in ${directory} still ran after 10 s`).toBe(false);
      expect(r.line, r.stderr).toEqual({ error: { code: 'UNAVAILABLE', driver: 'file', details: { file: '/proc/self/cairn-volumes' } } });
    }
  });

  it('createVolume in a removed directory reached through /proc/self/fd fails at once with UNAVAILABLE', async () => {
    const r = await createVolumeWithin(10_000, ['--removed', join(base, 'removed')]);
    expect(r.killed, 'createVolume still ran after 10 s').toBe(false);
    expect(r.line, r.stderr).toMatchObject({ error: { code: 'UNAVAILABLE', driver: 'file', details: { file: expect.stringMatching(/^\/proc\/self\/fd\/\d+\/volumes$/) } } });
  });
});
