/**
 * DriverRegistry.secret of a `file:` reference: what each way of failing to read the file is.
 * Permissions do not stop root, so the unreadable case runs in a child process with every
 * capability dropped (util-linux's setpriv) when the tests run as root, directly otherwise.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DriverRegistry } from '../src/index.js';

const built = fileURLToPath(new URL('../dist/index.js', import.meta.url));

/** The outcome of `registry.secret(reference)` in a process that file permissions apply to: `{value}` or `{error: {code, driver, details}}`. */
function secretUnprivileged(reference: string): Promise<{ value?: string; error?: { code: string; driver: string; details: unknown } }> {
  if (!existsSync(built)) throw new Error(`${built} is missing: run \`npx tsc -b packages/core\` first`);
  const script = `
    const { DriverRegistry } = await import(${JSON.stringify(built)});
    const out = await DriverRegistry.compose().secret(${JSON.stringify(reference)}).then(
      (value) => ({ value }),
      (err) => ({ error: { code: err.code, driver: err.driver, details: err.details } }),
    );
    process.stdout.write(JSON.stringify(out));`;
  const node = [process.execPath, '--input-type=module', '-e', script];
  const [cmd, args] = process.getuid?.() === 0 ? ['setpriv', ['--bounding-set=-all', '--inh-caps=-all', '--ambient-caps=-all', '--', ...node]] : [node[0]!, node.slice(1)];
  return new Promise((resolve, reject) => {
    execFile(cmd, args, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout))));
  });
}

describe('DriverRegistry.secret(file:…)', () => {
  let dir: string;
  const registry = DriverRegistry.compose();
  beforeAll(async () => (dir = await mkdtemp(join(tmpdir(), 'cairn-secret-file-'))));
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('secret(file:) of a file this process may not read is UNAVAILABLE naming the file; readable again, it reads', async () => {
    const file = join(dir, 'locked-key');
    await writeFile(file, 'the passphrase\n', { mode: 0o600 });
    await chmod(file, 0o000);
    expect(await secretUnprivileged(`file:${file}`)).toEqual({ error: { code: 'UNAVAILABLE', driver: 'registry', details: { file } } });
    await chmod(file, 0o600);
    expect(await secretUnprivileged(`file:${file}`)).toEqual({ value: 'the passphrase' });
  });

  it('secret(file:) of a missing file is NOT_FOUND naming the file', async () => {
    const file = join(dir, 'absent');
    await expect(registry.secret(`file:${file}`)).rejects.toMatchObject({ code: 'NOT_FOUND', driver: 'registry', details: { file } });
  });

  it('secret(file:) of a directory is INVALID_INPUT naming it (a wrong reference, not a missing file)', async () => {
    const sub = join(dir, 'a-directory');
    await mkdir(sub);
    await expect(registry.secret(`file:${sub}`)).rejects.toMatchObject({ code: 'INVALID_INPUT', driver: 'registry', details: { file: sub } });
  });
});
