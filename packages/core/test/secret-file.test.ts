/**
 * DriverRegistry.secret of a `file:` reference: what each way of failing to read the file is.
 * Permissions do not stop root, so the unreadable case runs in a child process with every
 * capability dropped (util-linux's setpriv) when the tests run as root, directly otherwise.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
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

  it('secret(file:) of a symlink loop is INVALID_INPUT, and of a path through a file NOT_FOUND, each naming it', async () => {
    const loop = join(dir, 'loop');
    await symlink(loop, loop);
    await expect(registry.secret(`file:${loop}`)).rejects.toMatchObject({ code: 'INVALID_INPUT', driver: 'registry', details: { file: loop } });
    const plain = join(dir, 'plain');
    await writeFile(plain, 'x');
    await expect(registry.secret(`file:${plain}/key`)).rejects.toMatchObject({ code: 'NOT_FOUND', driver: 'registry', details: { file: `${plain}/key` } });
  });

  it('secret(file:/dev/zero) and a file over 64 KiB are INVALID_INPUT after reading at most 64 KiB; 64 KiB exactly reads', async () => {
    await expect(registry.secret('file:/dev/zero')).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { file: '/dev/zero' } });
    const big = join(dir, 'big');
    await writeFile(big, Buffer.alloc(64 * 1024 + 1, 0x61));
    await expect(registry.secret(`file:${big}`)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { file: big } });
    await writeFile(big, Buffer.alloc(64 * 1024, 0x61));
    expect(await registry.secret(`file:${big}`)).toBe('a'.repeat(64 * 1024));
  });

  it('secret(file:) of a pipe reads what is written to it (a shell\'s <(…))', async () => {
    const fifo = join(dir, 'fifo');
    await new Promise<void>((res, rej) => execFile('mkfifo', [fifo], (err) => (err ? rej(err) : res())));
    const writer = writeFile(fifo, 'piped secret\r\n');
    expect(await registry.secret(`file:${fifo}`)).toBe('piped secret');
    await writer;
  });

  it('secret(file:) that fails with EIO is UNAVAILABLE with the errno, not NOT_FOUND', async () => {
    // /proc/self/mem reads fail with EIO at offset 0 (no page is mapped there).
    await expect(registry.secret('file:/proc/self/mem')).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { file: '/proc/self/mem', errno: 'EIO' } });
  });
});
