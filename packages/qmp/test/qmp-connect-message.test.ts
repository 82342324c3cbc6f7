// QmpClient.connect wraps what went wrong in UNAVAILABLE "cannot open QMP at <target>: <reason>".
// The reason is often an error of the client's own driver, whose message starts with the driver
// tag; it used to be quoted whole, so the tag came twice ("[qemu-storage-daemon] cannot open QMP
// at …: [qemu-storage-daemon] not a QMP greeting: …"). The message carries it once, in front.
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient } from '../src/index.js';
import { FakeQmpPeers, expectCode, removeDir, tempDir } from './helpers.js';

const peers = new FakeQmpPeers();
let dir: string | undefined;
const silent: Socket[] = [];
const silentServers: Server[] = [];

beforeAll(async () => {
  await peers.open();
  dir = await tempDir();
});
afterAll(async () => {
  for (const s of silent) s.destroy();
  for (const s of silentServers) s.close();
  await peers.close();
  await removeDir(dir);
});

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The peers of each failure, and the reason expected after "cannot open QMP at <path>: ". */
const CASES: Array<[string, () => Promise<string>, RegExp]> = [
  ['not a QMP greeting', async () => (await peers.listen(() => undefined, '{"hello":1}')).path, /^not a QMP greeting: \{"hello":1\}$/],
  [
    'an error reply to qmp_capabilities',
    async () => (await peers.listen((m, s) => s.write(`${JSON.stringify({ error: { class: 'GenericError', desc: 'refused here' }, id: m.id })}\r\n`))).path,
    /^qmp_capabilities: refused here$/,
  ],
  ['a peer that hangs up after the greeting', async () => (await peers.listen((_m, s) => s.destroy())).path, /^QMP connection closed by the peer$/],
  [
    'a peer that never greets',
    async () => {
      const path = join(dir!, `silent${silentServers.length}.sock`);
      const server = createServer((s) => void silent.push(s));
      await new Promise<void>((resolve) => server.listen(path, resolve));
      silentServers.push(server);
      return path;
    },
    /^no QMP handshake from .* within 300 ms$/,
  ],
  ['no socket', async () => join(dir!, 'missing.sock'), /^connect ENOENT /],
];

describe('QmpClient.connect error messages carry the driver tag once', () => {
  for (const driver of ['qemu-storage-daemon', undefined]) {
    const tag = `[${driver ?? 'qmp'}]`;
    for (const [what, peer, reason] of CASES) {
      it(`${what}, driver ${tag}: "${tag} cannot open QMP at <path>: <reason>"`, async () => {
        const path = await peer();
        const err = (await expectCode(QmpClient.connect({ path }, { timeoutMs: 300, ...(driver ? { driver } : {}) }), 'UNAVAILABLE')) as { code: string; message?: string; driver?: string };
        const message = err.message ?? '';
        expect(err.driver).toBe(driver ?? 'qmp');
        const prefix = `${tag} cannot open QMP at ${path}: `;
        expect(message.startsWith(prefix), message).toBe(true);
        expect(message.slice(prefix.length)).toMatch(reason);
        expect(message.split(tag).length - 1, message).toBe(1);
        expect(message).not.toMatch(new RegExp(`: ${escape(tag)}`));
      });
    }
  }
});
