import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkOutputLocation } from '../src/io/output-path.js';
import { removeDir } from './helpers.js';

const isRoot = process.getuid?.() === 0 && typeof process.seteuid === 'function';

/**
 * The sticky-directory rule of checkOutputLocation judges by the effective uid, as the kernel does
 * when the file is replaced: a process whose real uid is 0 but whose effective uid is another
 * user's (after seteuid, or setuid-root the other way round) may not replace a third user's file
 * in a sticky directory, and is told so before anything is written. Needs root, to change the
 * effective uid of this process (back again after each check: the real and saved uids stay 0).
 */
describe.skipIf(!isRoot)('checkOutputLocation in a sticky directory, by effective uid', () => {
  let base: string;
  let file: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'cairn-euid-'));
    await chmod(base, 0o755);
    const sticky = join(base, 'sticky');
    await mkdir(sticky);
    await chmod(sticky, 0o1777); // root's, as /tmp
    file = join(sticky, 'theirs.raw');
    await writeFile(file, 'a file of user 2000');
    await chown(file, 2000, 2000);
  });
  afterAll(() => removeDir(base));

  /** checkOutputLocation(file) run with effective uid `euid` (real uid 0). */
  async function checkAs(euid: number): Promise<unknown> {
    process.seteuid!(euid);
    try {
      return await checkOutputLocation(file).catch((err: unknown) => err);
    } finally {
      process.seteuid!(0);
    }
  }

  it("refuses another user's file (UNAVAILABLE, details.file) for effective uid 1000 though the real uid is 0", async () => {
    expect(process.getuid!()).toBe(0);
    expect(await checkAs(1000)).toMatchObject({ code: 'UNAVAILABLE', details: { file } });
  });

  it("lets the file's owner (effective uid 2000) and root (effective uid 0) replace it", async () => {
    expect(await checkAs(2000)).toBe(true);
    expect(await checkAs(0)).toBe(true);
  });
});

/**
 * The check that the directory may be written in judges by the effective uid too, as the kernel
 * does when the file is created there: with real uid 0 (which access(2) judges, and which may
 * write anywhere) and effective uid 1000, a directory of root's (0755) is refused before anything
 * is written, with `UNAVAILABLE` naming it, and a directory of uid 1000's (0700) is taken. Needs
 * root, to change the effective uid of this process (back again after each check).
 */
describe.skipIf(!isRoot)('checkOutputLocation: writing in the directory, by effective uid', () => {
  let base: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'cairn-euid-dir-'));
    await chmod(base, 0o755);
    await mkdir(join(base, 'roots'), { mode: 0o755 });
    await mkdir(join(base, 'users'), { mode: 0o700 });
    await chown(join(base, 'users'), 1000, 1000);
  });
  afterAll(() => removeDir(base));

  /** `what(file)` run with effective uid 1000 (real uid 0): its result, or the error it rejects with. */
  async function asUser(what: (file: string) => Promise<unknown>, file: string): Promise<unknown> {
    process.seteuid!(1000);
    try {
      return await what(file).catch((err: unknown) => err);
    } finally {
      process.seteuid!(0);
    }
  }

  it("refuses a directory effective uid 1000 may not write in (UNAVAILABLE, details.file, the directory named), as the kernel refuses the write", async () => {
    const file = join(base, 'roots', 'image.raw');
    const err = await asUser(checkOutputLocation, file);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', details: { file } });
    expect((err as Error).message).toContain(`in directory ${join(base, 'roots')}`);
    // The kernel agrees: the write itself is refused for that effective uid.
    expect(await asUser((f) => writeFile(f, 'x'), file)).toMatchObject({ code: 'EACCES' });
    expect(await readdir(join(base, 'roots'))).toEqual([]);
  });

  it("takes a directory of effective uid 1000's own (0700), as the kernel takes the write", async () => {
    const file = join(base, 'users', 'image.raw');
    expect(await asUser(checkOutputLocation, file)).toBe(false);
    expect(await asUser((f) => writeFile(f, 'x'), file)).toBeUndefined();
  });
});

const setprivUsable = isRoot && spawnSync('setpriv', ['--version']).status === 0;
const outputPathModule = fileURLToPath(new URL('../dist/io/output-path.js', import.meta.url));

/**
 * A user that is not root but holds CAP_DAC_OVERRIDE (systemd's `User=cairn` with
 * `AmbientCapabilities=CAP_DAC_OVERRIDE`, or `setcap cap_dac_override+ep` on node) may write in any
 * directory, as the kernel judges the writes; access(2), which drops a non-root caller's
 * capabilities, says EACCES. checkOutputLocation takes such a directory, as the write does. Run in
 * a child process made uid/gid 1000 with that capability alone (setpriv), on the built package.
 * Needs root and setpriv.
 */
describe.skipIf(!setprivUsable)('checkOutputLocation: a non-root user holding CAP_DAC_OVERRIDE', () => {
  let base: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'cairn-dac-'));
    await chmod(base, 0o755);
    await mkdir(join(base, 'roots'), { mode: 0o755 }); // root's: uid 1000 writes here only by the capability
  });
  afterAll(() => removeDir(base));

  /**
   * checkOutputLocation(file) and then the write itself, in a child of uid/gid 1000 with `caps`
   * (setpriv's `+dac_override`, or `-all`). Without capabilities the child starts as root, loads
   * the module and only then becomes uid/gid 1000 (setuid drops every capability): the checkout
   * may sit in a directory uid 1000 cannot read (a 0700 temporary directory).
   */
  function childCheckAndWrite(file: string, caps: string): { check: unknown; wrote: string } {
    const dropTo = caps === '-all' ? 'process.setgroups([]); process.setgid(1000); process.setuid(1000);' : '';
    const script = `
      import { writeFileSync } from 'node:fs';
      const { checkOutputLocation } = await import(${JSON.stringify(outputPathModule)});
      ${dropTo}
      const check = await checkOutputLocation(process.argv[1]).catch((e) => ({ code: e.code, message: e.message }));
      let wrote = 'yes';
      try { writeFileSync(process.argv[1], 'x'); } catch (e) { wrote = e.code; }
      process.stdout.write(JSON.stringify({ check, wrote }));`;
    const node = [process.execPath, '--input-type=module', '-e', script, file];
    const out =
      caps === '-all'
        ? execFileSync(node[0]!, node.slice(1), { encoding: 'utf8', cwd: base })
        : execFileSync('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', `--inh-caps=${caps}`, `--ambient-caps=${caps}`, ...node], { encoding: 'utf8', cwd: base });
    return JSON.parse(out) as { check: unknown; wrote: string };
  }

  it('takes a directory of root\'s (0755) that the capability lets it write in, as the kernel takes the write', () => {
    const file = join(base, 'roots', 'image.raw');
    expect(childCheckAndWrite(file, '+dac_override')).toEqual({ check: false, wrote: 'yes' });
  });

  it('without the capability the same directory is refused (UNAVAILABLE), as the kernel refuses the write', () => {
    const file = join(base, 'roots', 'other.raw');
    const r = childCheckAndWrite(file, '-all');
    expect(r.check).toMatchObject({ code: 'UNAVAILABLE' });
    expect(r.wrote).toBe('EACCES');
  });
});
