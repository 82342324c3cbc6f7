import { rm } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient } from '../src/index.js';
import { removeDir, tempDir } from './helpers.js';

// A misbehaving QMP peer must never crash the process: whatever it sends after the handshake,
// the client fails its calls and closes with UNAVAILABLE.
let dir: string;
const servers: net.Server[] = [];

beforeAll(async () => {
  dir = await tempDir();
});

afterAll(async () => {
  for (const s of servers) s.close();
  await removeDir(dir);
});

/** A fake QMP server: greets, answers every command with `{}`, and sends `reply` after `query-version`'s answer. */
async function fakeQmp(name: string, reply: string): Promise<string> {
  const path = join(dir, name);
  await rm(path, { force: true });
  const server = net.createServer((s) => {
    s.write(`${JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: '' }, capabilities: [] } })}\r\n`);
    s.on('data', (b) => {
      for (const line of String(b).split('\n').filter(Boolean)) {
        const m = JSON.parse(line) as { execute: string; id: string };
        if (m.execute === 'query-version') s.write(`${reply}\r\n`);
        else s.write(`${JSON.stringify({ return: {}, id: m.id })}\r\n`);
      }
    });
    s.on('error', () => {});
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return path;
}

describe('QmpClient with a misbehaving peer', () => {
  for (const reply of ['null', '42', '"text"', 'true', '[]']) {
    it(`a JSON line that is not an object (${reply}) closes the client with UNAVAILABLE and fails the pending call`, async () => {
      const uncaught: unknown[] = [];
      const onUncaught = (err: unknown): void => void uncaught.push(err);
      process.on('uncaughtException', onUncaught);
      try {
        const client = await QmpClient.connect({ path: await fakeQmp(`q${servers.length}.sock`, reply) });
        await expect(client.execute('query-version', undefined, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
        expect(client.closed).toBe(true);
        expect(await client.whenClosed).toMatchObject({ code: 'UNAVAILABLE' });
        await expect(client.execute('query-version')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      } finally {
        process.off('uncaughtException', onUncaught);
      }
      expect(uncaught).toEqual([]);
    });
  }
});
