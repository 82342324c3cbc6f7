// NbdClient.listExports / listMetaContexts against servers that stop answering during option
// haggling: the option phase is bounded by connectTimeoutMs (UNAVAILABLE, connection closed).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { outcome, sleep } from './helpers/outcome.js';
import { ScriptedServers } from './helpers/scripted-servers.js';
import { GREETING } from './helpers/raw-nbd.js';

const scripted = new ScriptedServers('nbd-ot-');

beforeAll(() => scripted.open());
afterAll(() => scripted.close());

/**
 * A fixed-newstyle server that sends the greeting, then reads whatever the client sends and never
 * answers an option (and never hangs up). `closed` resolves when a client hangs up.
 */
async function mutedServer(): Promise<{ path: string; closed: Promise<void> }> {
  let closedResolve!: () => void;
  const closed = new Promise<void>((r) => (closedResolve = r));
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    scripted.track(s);
    s.on('error', () => undefined);
    s.once('end', () => closedResolve()); // the client hung up (this side stays open)
    s.on('data', () => undefined); // read and ignore the client's flags and options
    s.write(GREETING);
  });
  return { path: await scripted.listen(server), closed };
}

describe('NbdClient option phase timeout', () => {
  it('listExports from a server that never answers NBD_OPT_LIST fails with UNAVAILABLE after connectTimeoutMs and closes', async () => {
    const { path, closed } = await mutedServer();
    const started = Date.now();
    expect(await outcome(NbdClient.listExports({ path, connectTimeoutMs: 200 }), 3000)).toBe('UNAVAILABLE');
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(await outcome(closed, 1000)).toBe('fulfilled');
  });

  it('listMetaContexts from a server that never answers fails with UNAVAILABLE after connectTimeoutMs and closes', async () => {
    const { path, closed } = await mutedServer();
    const started = Date.now();
    const list = NbdClient.listMetaContexts({ path, connectTimeoutMs: 200 }, 'disk', ['base:allocation']);
    expect(await outcome(list, 3000)).toBe('UNAVAILABLE');
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(await outcome(closed, 1000)).toBe('fulfilled');
  });

  it('connect() to a server that never answers an option fails with UNAVAILABLE after connectTimeoutMs', async () => {
    const { path, closed } = await mutedServer();
    expect(await outcome(NbdClient.connect({ path, connectTimeoutMs: 200 }), 3000)).toBe('UNAVAILABLE');
    expect(await outcome(closed, 1000)).toBe('fulfilled');
  });
});
