// Strings qemu's JSON parser refuses: lone UTF-16 surrogates (JSON.stringify writes them as
// "\ud800") and Unicode noncharacters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF). qemu 7.2 answers such a
// request with `{"error": {"desc": "JSON parse error, \ud800 is not a valid Unicode character"}}`
// and no `id` (it could not read one), so the reply matches no call: the call used to wait for
// its timeout (forever with `timeoutMs: Infinity`) and fail UNAVAILABLE, as if the daemon hung.
// The client must refuse them with INVALID_INPUT before sending, and stay usable. So too for a
// message past the limits of qemu's JSON streamer (nesting over 1024, over 2^21 tokens, 64 MiB of
// tokens), which qemu answers with "JSON nesting depth limit exceeded" (…) and no `id` either.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuStorageDaemon } from '../src/index.js';
import { expectCode } from './helpers.js';

let daemon: QemuStorageDaemon;

beforeAll(async () => {
  daemon = await QemuStorageDaemon.start();
});

afterAll(async () => {
  await daemon?.stop();
});

const BAD: Array<[string, string]> = [
  ['a lone high surrogate', 'n\ud800x'],
  ['a lone low surrogate', 'n\udc00x'],
  ['U+FFFF', 'n\uffffx'],
  ['U+FDD0', 'n\ufdd0x'],
  ['U+1FFFE', 'n\u{1fffe}x'],
];

describe('QmpClient with strings qemu cannot parse', () => {
  for (const [what, name] of BAD) {
    it(`an argument holding ${what} fails at once with INVALID_INPUT, and the client stays usable`, async () => {
      const dropped = daemon.qmp.droppedReplies;
      // Refused before it is sent: INVALID_INPUT, not the UNAVAILABLE of a reply that never came (the 3 s timeout).
      const err = await expectCode(daemon.qmp.execute('blockdev-add', { driver: 'null-co', 'node-name': name }, { timeoutMs: 3_000 }), 'INVALID_INPUT');
      expect(err.details).toMatchObject({ command: 'blockdev-add' });
      expect(daemon.qmp.droppedReplies - dropped).toBe(0);
      expect((await daemon.qmp.execute('query-version')).qemu.major).toBeGreaterThan(0);
    });
  }

  it('a key or a nested value holding one is refused too (transaction actions)', async () => {
    const dropped = daemon.qmp.droppedReplies;
    await expectCode(daemon.qmp.execute('x-any', { ['k\ud800']: 1 }, { timeoutMs: 3_000 }), 'INVALID_INPUT');
    await expectCode(
      daemon.qmp.transaction([{ type: 'block-dirty-bitmap-add', data: { node: 'n', name: 'b\uffff' } }], { timeoutMs: 3_000 }),
      'INVALID_INPUT',
    );
    expect(daemon.qmp.droppedReplies - dropped).toBe(0);
  });

  it('valid non-ASCII (an astral character, U+FFFD) still reaches qemu and gets its own answer', async () => {
    const dropped = daemon.qmp.droppedReplies;
    const err = await expectCode(daemon.qmp.execute('blockdev-add', { driver: 'null-co', 'node-name': 'n\u{1f600}\ufffdx' }, { timeoutMs: 3_000 }), 'INVALID_INPUT');
    expect(err.details).toMatchObject({ qmpClass: 'GenericError' }); // qemu's "Invalid node-name", not ours
    expect(daemon.qmp.droppedReplies - dropped).toBe(0);
  });

  it('arguments JSON cannot encode (a BigInt, a cycle) fail at once with INVALID_INPUT, and the client stays usable', async () => {
    const cycle: Record<string, unknown> = { driver: 'null-co' };
    cycle.self = cycle;
    for (const args of [{ driver: 'null-co', size: 2n ** 40n }, cycle]) {
      const err = await expectCode(daemon.qmp.execute('blockdev-add', args as never, { timeoutMs: Infinity }), 'INVALID_INPUT');
      expect(err.details).toMatchObject({ command: 'blockdev-add' });
    }
    expect((await daemon.qmp.execute('query-version')).qemu.major).toBeGreaterThan(0);
  });
});

/** `value` wrapped in `depth` arrays. */
function nested(depth: number, value: unknown = 1): unknown {
  let v = value;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

describe("QmpClient with messages past qemu's JSON parser limits", () => {
  // The request is {"execute", "arguments": {"x": …}, "id"}: two levels before `x`'s value.
  it('arguments nested 1023 levels (1025 in all) fail at once with INVALID_INPUT, and the client stays usable', { timeout: 30_000 }, async () => {
    const dropped = daemon.qmp.droppedReplies;
    const err = await expectCode(daemon.qmp.execute('blockdev-add', { x: nested(1023) } as never, { timeoutMs: Infinity }), 'INVALID_INPUT');
    expect(err.details).toMatchObject({ command: 'blockdev-add' });
    expect(err.details?.qmpClass).toBeUndefined(); // ours, not qemu's
    expect(daemon.qmp.droppedReplies - dropped).toBe(0);
    expect((await daemon.qmp.execute('query-version')).qemu.major).toBeGreaterThan(0);
  });

  it('1024 levels in all still reach qemu and get its own answer', { timeout: 30_000 }, async () => {
    const dropped = daemon.qmp.droppedReplies;
    const err = await expectCode(daemon.qmp.execute('query-version', { x: nested(1022) } as never, { timeoutMs: 3_000 }), 'INVALID_INPUT');
    expect(err.details).toMatchObject({ qmpClass: 'GenericError' }); // "Parameter 'x' is unexpected"
    expect(daemon.qmp.droppedReplies - dropped).toBe(0);
  });

  it('more than 2^21 tokens, or 64 MiB of them, fail at once with INVALID_INPUT', { timeout: 30_000 }, async () => {
    const dropped = daemon.qmp.droppedReplies;
    // {"execute":…,"arguments":{"x":[0,0,…]},"id":…}: two tokens per element.
    await expectCode(daemon.qmp.execute('blockdev-add', { x: new Array(1024 * 1024 + 8).fill(0) } as never, { timeoutMs: Infinity }), 'INVALID_INPUT');
    await expectCode(daemon.qmp.execute('blockdev-add', { x: 'a'.repeat(64 * 1024 * 1024) } as never, { timeoutMs: Infinity }), 'INVALID_INPUT');
    expect(daemon.qmp.droppedReplies - dropped).toBe(0);
    expect((await daemon.qmp.execute('query-version')).qemu.major).toBeGreaterThan(0);
  });
});
