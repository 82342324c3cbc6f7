import type { Command } from 'commander';
import { CairnError } from '@cairn/core';
import { CliContext, type GlobalOptions } from './context.js';
import { ExitCode, exitCodeFor } from './exit-codes.js';
import { withoutHint } from './output/error-hints.js';
import { Output } from './output/output.js';
import { stdoutFailure, watchStdout } from './output/stdout.js';

/** A command body: positional arguments, its own options, the context; returns the exit code (default 0). */
export type CommandBody<O> = (ctx: CliContext, args: string[], opts: O) => Promise<number | void>;

/** Positional arguments, options and globals of a commander action call. */
function split<O>(raw: unknown[]): { args: string[]; opts: O; globals: GlobalOptions } {
  const cmd = raw[raw.length - 1] as Command;
  return { args: raw.slice(0, -2) as string[], opts: raw[raw.length - 2] as O, globals: cmd.optsWithGlobals() as GlobalOptions };
}

/**
 * Wraps a command body as a commander action: loads the config into a CliContext, runs the
 * body, prints any error (text, or JSON with `--json`) and sets the exit code from its
 * CairnError code. The context is closed in `finally`; a failure of that close is reported by
 * `reportCloseFailure`, a failure to write to stdout (also a closed pipe) by `reportStdoutFailure`,
 * after the close: a failed write never skips it.
 */
export function withContext<O>(body: CommandBody<O>): (...raw: unknown[]) => Promise<void> {
  return async (...raw) => {
    const { args, opts, globals } = split<O>(raw);
    const out = new Output(globals);
    watchStdout();
    let ctx: CliContext | undefined;
    try {
      ctx = await CliContext.create(globals, out);
      process.exitCode = (await body(ctx, args, opts)) ?? 0;
    } catch (err) {
      out.error(err);
      process.exitCode = exitCodeFor(err);
    } finally {
      const unclosed = await ctx?.close();
      if (unclosed) process.exitCode = reportCloseFailure(out, unclosed, Number(process.exitCode ?? 0));
      process.exitCode = reportStdoutFailure(out, await stdoutFailure(), Number(process.exitCode ?? 0));
    }
  };
}

/**
 * The command's writes to stdout failed (`failure`, if any). Its reader gone (EPIPE: `cairn volume
 * list | head -1`, or a reader that exited early) ends the run quietly with exit 141
 * (ExitCode.BROKEN_PIPE), what a shell reports for a program ended by SIGPIPE, as other tools end
 * there: no message, since no one reads the rest. Any other error (ENOSPC on a full disk or
 * /dev/full, EIO) is `UNAVAILABLE`, exit 6, printed on stderr, the command's work (done) standing.
 * A command that failed keeps its own error and exit code (a failure other than EPIPE is then a
 * `warning:` line). Returns the exit code the run ends with, given the one the command ended with.
 */
export function reportStdoutFailure(out: Output, failure: NodeJS.ErrnoException | undefined, exitCode: number): number {
  if (!failure) return exitCode;
  const epipe = failure.code === 'EPIPE';
  if (exitCode !== 0) {
    if (!epipe) out.warn(`the output could not be written to stdout: ${failure.message}`);
    return exitCode;
  }
  if (epipe) return ExitCode.BROKEN_PIPE;
  // No hint: the full-file-system one speaks of the repository and `repo gc`, which stdout is not.
  out.error(
    withoutHint(
      new CairnError('UNAVAILABLE', `the command completed, but its output could not be written to stdout: ${failure.message}`, {
        cause: failure,
        details: failure.code ? { errno: failure.code } : {},
      }),
    ),
  );
  return ExitCode.UNAVAILABLE;
}

/**
 * The volume driver could not be closed after the command ran: with qcow2, a daemon that SIGKILL
 * could not end (stuck in uninterruptible I/O), which keeps its images open and locked, so the
 * next command on them is BUSY, and writes it had not flushed may be lost. The command's own
 * result stands (it was printed), but the run did not end clean: a command that succeeded fails
 * with that error (`error [UNAVAILABLE]: …`, exit 6, `details.leftBehind` and `pid` with
 * `--json`), as a detach that leaves a daemon behind does; a command that failed keeps its own
 * error and exit code, and the close failure is a `warning:` line. Returns the exit code the run
 * ends with, given the one the command ended with.
 */
export function reportCloseFailure(out: Output, err: CairnError, exitCode: number): number {
  const message = `the volume driver could not be closed: ${err.message}`;
  if (exitCode !== 0) {
    out.warn(message);
    return exitCode;
  }
  out.error(new CairnError(err.code, `the command completed, but ${message}`, { cause: err, details: err.details }));
  return exitCodeFor(err);
}

/** Like `withContext` for commands that load no config (`init`, `demo`): the body gets the Output and globals; stdout's failures as reportStdoutFailure says. */
export function withoutContext<O>(body: (out: Output, args: string[], opts: O, globals: GlobalOptions) => Promise<number | void>): (...raw: unknown[]) => Promise<void> {
  return async (...raw) => {
    const { args, opts, globals } = split<O>(raw);
    const out = new Output(globals);
    watchStdout();
    try {
      process.exitCode = (await body(out, args, opts, globals)) ?? 0;
    } catch (err) {
      out.error(err);
      process.exitCode = exitCodeFor(err);
    }
    process.exitCode = reportStdoutFailure(out, await stdoutFailure(), Number(process.exitCode ?? 0));
  };
}
