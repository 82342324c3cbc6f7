import { randomBytes } from 'node:crypto';
import { linkSync, lstatSync, renameSync, unlinkSync, type Stats } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { CairnError, isNoHardLinks, linkIfAbsent, writeNewFileDurably } from '@cairn/core';
import { accessError } from './input-file.js';
import { createPartialFile, syncPublished, type PartialFile, type Published } from './partial-file.js';

/** A config file's name held by claimConfigFile until `publish` puts the config in its place, or `release()` gives it up. */
export interface ConfigClaim {
  /**
   * Puts the config `text` in place of the empty file, atomically and durably: a temporary file
   * is written and fsynced in a private directory beside the config (createPartialFile:
   * `.cairn-partial-XXXXXX`, naming this process, so that one an init killed outright leaves is
   * removed by a later init or export once its owner is dead), the empty file is removed if it is still
   * ours (removeIfOurs), the temporary file is linked to the config's name (link(2), which never
   * replaces a file), and the directory is fsynced. Resolves `false`, having published nothing,
   * when another file holds the name (another init wrote the config meanwhile, e.g. with
   * `--force`): a plain init never replaces a file it did not create. Between the removal and the
   * link the name is free for an instant; another init that claims it then goes on, and this one
   * resolves false (one config, never a replaced one). On a file system without hard links (vfat,
   * some FUSE mounts) the temporary file is renamed to the name instead, which the empty file left
   * an instant before. The private directory is removed whatever happens (SIGINT and SIGTERM
   * included). Errors are the system's, as writeFileAtomic's; once the config is in place, a failed
   * fsync of the directory is not one: it is `notDurable` in the result (Published). Call it once.
   */
  publish(text: string): Promise<Published | false>;
  /**
   * Removes the empty file unless something else has taken its place since (the published config,
   * or another file put there), and stops watching for signals. Idempotent.
   */
  release(): Promise<void>;
}

/**
 * Claims the config `file` (for `cairn init` without `--force`), which must not exist: creates it
 * empty with O_CREAT|O_EXCL, so that of several inits naming one config at once exactly one gets
 * it, before it makes its repository. The others get `ALREADY_EXISTS` (details.file) having
 * created nothing. The holder publishes the config over its own empty file (`publish`) and calls
 * `release()` in `finally`: after a failure that removes the empty file, after success it leaves
 * the config alone. From before the create until then, SIGINT and SIGTERM remove the empty file
 * (and publish's private directory) and end the process as they would have; one that comes while the
 * create is under way takes effect when it returns. A holder killed otherwise (SIGKILL, a crash,
 * power loss) leaves the empty file, which existingConfigError tells from a real config. A
 * directory this process may not write in is `UNAVAILABLE`; other system errors are thrown as they
 * are.
 */
export async function claimConfigFile(file: string): Promise<ConfigClaim> {
  /** The empty file, once created. */
  let placeholder: Stats | undefined;
  let opening = true;
  /** A signal that came while the create was under way. */
  let pending: NodeJS.Signals | undefined;
  /** publish's private directory while it exists. */
  let temp: PartialFile | undefined;
  let published = false;
  // Device and inode, and the birth time where the file system keeps one (0 where it does not): a
  // freed inode number may be reused at once for another init's empty claim.
  const ours = (st: Stats | undefined) =>
    placeholder !== undefined &&
    st !== undefined &&
    st.isFile() &&
    st.dev === placeholder.dev &&
    st.ino === placeholder.ino &&
    st.birthtimeMs === placeholder.birthtimeMs &&
    st.size === 0;
  const abandon = (signal: NodeJS.Signals) => {
    // A second signal during the clean-up waits for it instead of ending the process half-way.
    const hold = () => {};
    process.on('SIGINT', hold);
    process.on('SIGTERM', hold);
    stopWatching();
    temp?.discardSync(); // never throws: ending the process matters more than a temporary file
    try {
      if (!published) removeIfOurs(file, ours);
    } catch {
      // Ending the process matters more than the empty file: the next init's message explains it.
    }
    process.off('SIGINT', hold);
    process.off('SIGTERM', hold);
    process.kill(process.pid, signal);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (opening) pending = signal;
    else abandon(signal);
  };
  const stopWatching = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  // Before the create, so that no signal finds the empty file made and no handler to remove it.
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const fh = await open(file, 'wx', 0o600);
    try {
      placeholder = await fh.stat();
    } finally {
      await fh.close();
    }
  } catch (err) {
    stopWatching();
    if (pending) process.kill(process.pid, pending);
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw await existingConfigError(file);
    throw accessError(err, file, 'write');
  } finally {
    opening = false;
  }
  if (pending) {
    abandon(pending);
    throw new CairnError('CANCELLED', `interrupted by ${pending}`, { details: { file } }); // the signal has ended the process by now
  }
  let released = false;
  return {
    async publish(text) {
      const partial = await createPartialFile(file);
      temp = partial;
      const written = partial.path;
      try {
        await writeNewFileDurably(written, text);
        if (removeIfOurs(file, ours) === 'theirs') return false;
        const linked = await linkIfAbsent(written, file).catch((err: unknown) => {
          if (!isNoHardLinks(err)) throw err;
          return undefined; // no hard links here
        });
        if (linked === false) return false;
        if (linked === undefined) {
          const result = await partial.publish(); // renamed to the name, which the empty file left an instant ago; the directory is fsynced
          published = true;
          return result;
        }
        published = true;
        await partial.discard();
        return await syncPublished(file);
      } finally {
        temp = undefined;
        await partial.discard();
      }
    },
    async release() {
      if (released) return;
      released = true;
      stopWatching();
      if (published) return;
      try {
        removeIfOurs(file, ours);
      } catch {
        // Left behind, the empty file is named by the next init (existingConfigError).
      }
    },
  };
}

/**
 * Removes `file` if `ours` recognizes it (the claim's empty file), and nothing else. A file that
 * is not ours is left alone; so is one that replaces ours between the check and the removal: the
 * name is renamed to a unique one first (whatever the name holds at that instant moves, and only
 * that is checked again), and a file that turns out not to be ours is linked back. When a file
 * was made at the name in the instant between that rename and the link back (another init's
 * claim), the one set aside is never deleted: it stays beside it as `<file>.displaced-<hex>`.
 * Synchronous, for the signal handler. 'absent' when nothing is at the name.
 */
export function removeIfOurs(file: string, ours: (st: Stats | undefined) => boolean): 'removed' | 'absent' | 'theirs' {
  const now = lstatSync(file, { throwIfNoEntry: false });
  if (now === undefined) return 'absent';
  if (!ours(now)) return 'theirs';
  const aside = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString('hex')}.claim`);
  try {
    renameSync(file, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw err;
  }
  if (ours(lstatSync(aside, { throwIfNoEntry: false }))) {
    unlinkSync(aside);
    return 'removed';
  }
  try {
    linkSync(aside, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      renameSync(aside, file); // no hard links here (or a directory): rename it back
      return 'theirs';
    }
    // Another file took the name meanwhile (another init's claim): the file set aside is not ours
    // to delete, so it stays, under a name that says what happened.
    renameSync(aside, `${file}.displaced-${randomBytes(4).toString('hex')}`);
    return 'theirs';
  }
  unlinkSync(aside);
  return 'theirs';
}

/**
 * `ALREADY_EXISTS` for the config `file`, which exists (`refusal`: the error that said so, if
 * any, kept unless the file is empty). An empty file is claimed (claimConfigFile) by an init
 * still writing it or by one that was killed before it finished, and the message says so;
 * `--force` replaces it either way.
 */
export async function existingConfigError(file: string, refusal?: CairnError): Promise<CairnError> {
  if ((await stat(file).catch(() => undefined))?.size !== 0) {
    return refusal ?? new CairnError('ALREADY_EXISTS', `${file} exists; pass --force to overwrite it`, { details: { file } });
  }
  const message = `${file} exists and is empty: another cairn init is writing it, or one was killed before it finished; pass --force to overwrite it`;
  return new CairnError('ALREADY_EXISTS', message, { cause: refusal, details: { file } });
}
