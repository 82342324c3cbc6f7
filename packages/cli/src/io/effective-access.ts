import type { Stats } from 'node:fs';
import { access, constants } from 'node:fs/promises';

/**
 * Checks that this process may read, write and search directory `dir` (whose `stat` is `st`), as
 * the kernel judges the opens, creations and renames that follow: by the effective uid and gid
 * (faccessat's AT_EACCESS), not by the real ones that access(2) uses, which differ in a setuid or
 * setgid process and after seteuid/setegid. Rejects with an `EACCES` system error when it may not.
 *
 * With effective ids equal to the real ones (the usual case) this is access(2), so ACLs and
 * read-only mounts count. Otherwise the mode bits of `st` decide, for the effective uid, gid and
 * supplementary groups: an effective uid 0 may (its write on a read-only mount still fails,
 * later, with that error); ACLs are not read.
 */
export async function assertEffectiveDirAccess(dir: string, st: Stats): Promise<void> {
  const euid = process.geteuid?.();
  const egid = process.getegid?.();
  if (euid === undefined || egid === undefined || (euid === process.getuid?.() && egid === process.getgid?.())) {
    await access(dir, constants.R_OK | constants.W_OK | constants.X_OK);
    return;
  }
  if (euid === 0) return;
  const inGroup = st.gid === egid || (process.getgroups?.() ?? []).includes(st.gid);
  const bits = st.uid === euid ? (st.mode >> 6) & 7 : inGroup ? (st.mode >> 3) & 7 : st.mode & 7;
  if (bits === 7) return;
  throw Object.assign(new Error(`EACCES: permission denied, access '${dir}' (effective uid ${euid}, gid ${egid})`), { code: 'EACCES', syscall: 'access', path: dir });
}
