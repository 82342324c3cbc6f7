// The greeting is the first line a QMP server sends. One of the wrong shape used to be taken as
// it came (`{"QMP": {}}` connected, and `client.greeting.version.qemu` then threw a TypeError in
// the caller), so a peer that is not a QMP server looked like one. connect must refuse it with
// UNAVAILABLE "not a QMP greeting", before sending anything else.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient } from '../src/index.js';
import { answerReturn, expectCode, FakeQmpPeers, type QmpCommand } from './helpers.js';

const peers = new FakeQmpPeers();

beforeAll(() => peers.open());
afterAll(() => peers.close());

const version = { qemu: { major: 7, minor: 2, micro: 0 }, package: 'Debian 1:7.2' };

const BAD: Array<[string, unknown]> = [
  ['an object without QMP', { hello: 1 }],
  ['QMP not an object', { QMP: 'yes' }],
  ['QMP empty', { QMP: {} }],
  ['version missing', { QMP: { capabilities: [] } }],
  ['capabilities missing', { QMP: { version } }],
  ['capabilities not an array', { QMP: { version, capabilities: 'oob' } }],
  ['a capability not a string', { QMP: { version, capabilities: [1] } }],
  ['version.qemu missing', { QMP: { version: { package: '' }, capabilities: [] } }],
  ['a version field a string', { QMP: { version: { qemu: { major: '7', minor: 2, micro: 0 }, package: '' }, capabilities: [] } }],
  ['a version field negative', { QMP: { version: { qemu: { major: 7, minor: -1, micro: 0 }, package: '' }, capabilities: [] } }],
  ['a version field fractional', { QMP: { version: { qemu: { major: 7, minor: 2, micro: 0.5 }, package: '' }, capabilities: [] } }],
  ['package not a string', { QMP: { version: { qemu: version.qemu, package: 7 }, capabilities: [] } }],
];

describe('QmpClient.connect with a greeting of the wrong shape', () => {
  for (const [what, greeting] of BAD) {
    it(`${what}: UNAVAILABLE "not a QMP greeting", and nothing is sent`, async () => {
      const received: QmpCommand[] = [];
      const { path, sockets } = await peers.listen((m, s) => {
        received.push(m);
        answerReturn(s, m);
      }, JSON.stringify(greeting));
      const err = (await expectCode(QmpClient.connect({ path }, { timeoutMs: 3_000 }), 'UNAVAILABLE')) as { message?: string; details?: Record<string, unknown> };
      expect(err.message).toContain('not a QMP greeting');
      expect(err.details).toMatchObject({ received: JSON.stringify(greeting), target: path });
      expect(received).toEqual([]);
      if (!sockets[0]!.closed) await new Promise((r) => sockets[0]!.once('close', r)); // the client hung up
    });
  }

  it('a greeting of the right shape with extra members connects, and `greeting` holds its version and capabilities', async () => {
    const greeting = { QMP: { version: { ...version, extra: true }, capabilities: ['oob'], more: 1 } };
    const { path } = await peers.listen((m, s) => answerReturn(s, m), JSON.stringify(greeting));
    const client = await QmpClient.connect({ path }, { timeoutMs: 3_000 });
    try {
      expect(client.greeting).toEqual({ version, capabilities: ['oob'] });
    } finally {
      await client.close();
    }
  });

  // connect's contract is UNAVAILABLE for a peer that gives no usable QMP; an error reply to
  // qmp_capabilities used to surface as the mapped code of that reply (INVALID_INPUT for a
  // GenericError), which reads as a fault in the caller's input.
  it('an error reply to qmp_capabilities fails connect with UNAVAILABLE, naming the reply', async () => {
    const { path } = await peers.listen((m, s) =>
      s.write(`${JSON.stringify({ error: { class: 'GenericError', desc: 'capabilities refused here' }, id: m.id })}\r\n`),
    );
    const err = (await expectCode(QmpClient.connect({ path }, { timeoutMs: 3_000 }), 'UNAVAILABLE')) as { message?: string };
    expect(err.message).toContain('capabilities refused here');
  });
});
