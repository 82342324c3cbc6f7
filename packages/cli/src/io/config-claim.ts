import { lstatSync, unlinkSync, type Stats } from 'node:fs';
import { lstat, open, stat, unlink } from 'node:fs/promises';
import { CairnError } from '@cairn/core';
import { accessError } from './input-file.js';

/** A config file's name held by claimConfigFile until its content is renamed over it, or `release()` gives it up. */
export interface ConfigClaim {
  /**
   * Removes the empty file unless something else has taken its place since (the content renamed
   * over it, or another file put there with `--force`); stops watching for signals. Idempotent.
   */
  release(): Promise<void>;
}

/**
 * Claims the config `file` (for `cairn init` without `--force`), which must not exist: creates it
 * empty with O_CREAT|O_EXCL, so that of several inits naming one config at once exactly one gets
 * it, before it makes its repository. The others get `ALREADY_EXISTS` (details.file) having
 * created nothing. The holder renames the whole config over the empty file (writeFileAtomic) and
 * calls `release()` in `finally`: after a failure that removes the empty file, after success it
 * leaves the config alone. Until then SIGINT and SIGTERM remove the empty file and end the process
 * as they would have. A holder killed otherwise (SIGKILL, a crash, power loss) leaves the empty
 * file, which existingConfigError tells from a real config. A directory this process may not
 * write in is `UNAVAILABLE`; other system errors are thrown as they are.
 */
export async function claimConfigFile(file: string): Promise<ConfigClaim> {
  let placeholder: Stats;
  try {
    const fh = await open(file, 'wx', 0o600);
    try {
      placeholder = await fh.stat();
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw await existingConfigError(file);
    throw accessError(err, file, 'write');
  }
  const ours = (st: Stats | undefined) => st !== undefined && st.dev === placeholder.dev && st.ino === placeholder.ino && st.size === 0;
  const onSignal = (signal: NodeJS.Signals) => {
    stopWatching();
    try {
      if (ours(lstatSync(file, { throwIfNoEntry: false }))) unlinkSync(file);
    } catch {
      // Ending the process matters more than the empty file: the next init's message explains it.
    }
    process.kill(process.pid, signal);
  };
  const stopWatching = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      stopWatching();
      if (ours(await lstat(file).catch(() => undefined))) await unlink(file).catch(() => undefined);
    },
  };
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
