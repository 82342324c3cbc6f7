/** @cairn/cli as a library: the command tree, config loading, archives, exit codes and the REST API server. */
export { buildProgram, run, VERSION } from './program.js';
export { ExitCode, exitCodeFor } from './exit-codes.js';
export { loadConfig, embeddedDefaults, type LoadedConfig } from './config/load.js';
export { ConfigSchema, type CairnConfig } from './config/schema.js';
export { CliContext, composeRegistry, type GlobalOptions } from './context.js';
export { exportBackup, writeArchive } from './archive/writer.js';
export { readArchive } from './archive/reader.js';
export { ApiServer, BODY_LIMIT, type ApiServerOptions } from './api/server.js';
export type { ApiContext } from './api/api-context.js';
export { JobTable, type JobView, type ApiJobKind, type ApiJobState } from './api/jobs.js';
export { HTTP_STATUS, errorResponse, type ApiErrorCode, type ErrorBody } from './api/errors.js';
