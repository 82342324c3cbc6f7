/** @cairn/cli as a library: the command tree, config loading, archives and exit codes. */
export { buildProgram, run, VERSION } from './program.js';
export { ExitCode, exitCodeFor } from './exit-codes.js';
export { loadConfig, embeddedDefaults, type LoadedConfig } from './config/load.js';
export { ConfigSchema, type CairnConfig } from './config/schema.js';
export { CliContext, composeRegistry, type GlobalOptions } from './context.js';
export { writeArchive } from './archive/writer.js';
export { readArchive } from './archive/reader.js';
