import { afterAll, beforeAll } from 'vitest';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { cairnJson, removeDir, serveApi, tempDir, writeDeploymentConfig, type ServedApi } from './helpers.js';

/** The smallest deployment (writeDeploymentConfig) with `cairn serve` running in it (servedDeployment). */
export interface ServedDeployment {
  cwd: string;
  config: string;
  server: ServedApi;
  /** `cairn --json …` in the deployment (cairnJson). */
  json<T = any>(args: string[]): Promise<T>;
  /** Runs `fn` with the deployment's context in this process: another process, as the server sees it. */
  inProcess<T>(fn: (ctx: CliContext) => Promise<T>): Promise<T>;
}

/**
 * A deployment (writeDeploymentConfig) in a new temporary directory, with `cairn serve …args`
 * (serveApi) running in it: set up in the calling `describe`'s beforeAll, the server stopped and
 * the directory removed in its afterAll. Its fields are set once beforeAll has run.
 */
export function servedDeployment(args: string[] = []): ServedDeployment {
  const d = {
    json: (cliArgs: string[]) => cairnJson(cliArgs, { cwd: d.cwd }),
    inProcess: async <T>(fn: (ctx: CliContext) => Promise<T>): Promise<T> => {
      const ctx = await CliContext.create({ config: d.config }, new Output({ quiet: true }));
      try {
        return await fn(ctx);
      } finally {
        await ctx.close();
      }
    },
  } as ServedDeployment;
  beforeAll(async () => {
    d.cwd = await tempDir();
    d.config = await writeDeploymentConfig(d.cwd);
    d.server = await serveApi(d.cwd, args);
  });
  afterAll(async () => {
    if (d.server) await d.server.stop();
    if (d.cwd) await removeDir(d.cwd);
  });
  return d;
}
