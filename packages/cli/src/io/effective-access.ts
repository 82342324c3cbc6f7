import type { Stats } from 'node:fs';
import { access, constants, readFile } from 'node:fs/promises';

/**
 * Checks that this process may read, write and search directory `dir` (whose `stat` is `st`), as
 * the kernel judges the opens, creations and renames that follow: by the effective uid and gid
 * (faccessat's AT_EACCESS), not by the real ones that access(2) uses, which differ in a setuid or
 * setgid process and after seteuid/setegid. Rejects with an `EACCES` system error when it may not.
 *
 * With effective ids equal to the real ones (the usual case) this is access(2), so ACLs and
 * read-only mounts count. Otherwise the mode bits of `st` decide, for the effective uid, gid and
 * supplementary groups: an effective uid 0 may (its write on a read-only mount still fails,
 * later, with that error); ACLs are not read. Either way a process holding CAP_DAC_OVERRIDE in
 * its effective set (a non-root user given it by systemd's AmbientCapabilities or a file
 * capability), which the kernel lets write in any directory but access(2) judges without its
 * capabilities, may too.
 */
export async function assertEffectiveDirAccess(dir: string, st: Stats): Promise<void> {
  const euid = process.geteuid?.();
  const egid = process.getegid?.();
  if (euid === undefined || egid === undefined || (euid === process.getuid?.() && egid === process.getgid?.())) {
    await access(dir, constants.R_OK | constants.W_OK | constants.X_OK).catch(async (err: unknown) => {
      if ((err as { code?: string }).code !== 'EACCES' || !(await holdsDacOverride())) throw err;
    });
    return;
  }
  if (euid === 0) return;
  const inGroup = st.gid === egid || (process.getgroups?.() ?? []).includes(st.gid);
  const bits = st.uid === euid ? (st.mode >> 6) & 7 : inGroup ? (st.mode >> 3) & 7 : st.mode & 7;
  if (bits === 7 || (await holdsDacOverride())) return;
  throw Object.assign(new Error(`EACCES: permission denied, access '${dir}' (effective uid ${euid}, gid ${egid})`), { code: 'EACCES', syscall: 'access', path: dir });
}

/** Bit of CAP_DAC_OVERRIDE (linux/capability.h) in the capability sets of /proc/<pid>/status. */
const CAP_DAC_OVERRIDE = 1n;

/** Whether this process's effective capabilities hold CAP_DAC_OVERRIDE (Linux); false where that cannot be read. */
async function holdsDacOverride(): Promise<boolean> {
  const status = await readFile('/proc/self/status', 'utf8').catch(() => '');
  const hex = /^CapEff:\s*([0-9a-f]+)$/im.exec(status)?.[1];
  return hex !== undefined && ((BigInt(`0x${hex}`) >> CAP_DAC_OVERRIDE) & 1n) === 1n;
}
