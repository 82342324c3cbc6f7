import { Command, CommanderError, Option } from 'commander';
import { registerApiServeCommand } from './commands/api-serve.js';
import { registerBackupCommands } from './commands/backup.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerInitCommand } from './commands/init.js';
import { registerRepoCommands } from './commands/repo.js';
import { registerVolumeCommands } from './commands/volume.js';
import { ExitCode } from './exit-codes.js';

export const VERSION = '0.1.0';

/** The whole `cairn` command tree (commander). Global options are accepted before or after the subcommand. */
export function buildProgram(): Command {
  const program = new Command('cairn')
    .description('Back up and restore block volumes through pluggable drivers')
    .version(VERSION)
    .option('-c, --config <file>', 'config file (default: $CAIRN_CONFIG, else cairn.config.json|yaml|yml in the working directory, else the embedded defaults)')
    .option('--driver <name>', 'volume driver from the config (default: defaultVolumeDriver, else the first)')
    .option('--json', 'print results as JSON on stdout (errors as JSON on stderr)', false)
    .addOption(new Option('-q, --quiet', 'no progress or informational lines on stderr').default(false))
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  // With --json anywhere on the line, usage errors are JSON too: {"error":{"code":"INVALID_INPUT",…}}.
  const json = process.argv.includes('--json');
  registerInitCommand(program);
  registerVolumeCommands(program);
  registerBackupCommands(program);
  registerRepoCommands(program);
  registerDemoCommand(program);
  registerApiServeCommand(program, VERSION);
  for (const c of allCommands(program)) {
    c.exitOverride();
    if (json) {
      c.showHelpAfterError(false);
      c.configureOutput({ outputError: (text, write) => write(`${JSON.stringify({ error: { code: 'INVALID_INPUT', message: text.replace(/^error: /, '').trim(), details: {} } })}\n`) });
    }
  }
  return program;
}

function allCommands(c: Command): Command[] {
  return [c, ...c.commands.flatMap(allCommands)];
}

/** Runs `cairn` with `argv` (node-style) and resolves with the exit code; usage errors are 2. */
export async function run(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : ExitCode.OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed the message or the help. --help and --version exit 0; a group
      // without its subcommand (help shown as an error) and every parse error exit 2.
      if (err.exitCode === 0) return ExitCode.OK;
      // The help of a group run without its subcommand went to stderr as it is: with --json its
      // last line must still be the error document, as for every other usage error.
      if (err.code === 'commander.help' && argv.includes('--json')) {
        process.stderr.write(`${JSON.stringify({ error: { code: 'INVALID_INPUT', message: 'missing command: the help above lists the commands', details: {} } })}\n`);
      }
      return ExitCode.USAGE;
    }
    throw err;
  }
}
