// NbdClient's request timeouts run on a monotonic clock: a step of the wall clock (NTP, a
// suspended VM resumed, an operator's `date -s`) neither cuts a healthy connection nor keeps a
// dead one alive. The step is simulated by moving Date.now.
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { NbdClient } from '../src/index.js';
import { outcome, sleep } from './helpers/outcome.js';
import { ScriptedServers } from './helpers/scripted-servers.js';
import { chunk, DONE, fakeServer, OFFSET_DATA, offsetData } from './helpers/raw-nbd.js';

const MiB = 1024 * 1024;
const HOUR = 3600_000;

const scripted = new ScriptedServers('nbd-clk-');

beforeAll(() => scripted.open());
afterEach(() => {
  vi.restoreAllMocks();
});
afterAll(() => scripted.close());

/** A structured fake server calling `answer` for every request; resolves with its socket path. */
async function serve(answer: (req: Buffer, s: net.Socket) => void): Promise<string> {
  const server = fakeServer(
    MiB,
    async (s, raw) => {
      scripted.track(s);
      for (;;) answer(await raw.read(28), s);
    },
    { structuredContextId: 7, allowHalfOpen: true },
  );
  return scripted.listen(server);
}

/** From now on Date.now() reads `stepMs` off the real clock. */
function stepWallClock(stepMs: number): void {
  const real = Date.now.bind(Date);
  vi.spyOn(Date, 'now').mockImplementation(() => real() + stepMs);
}

describe('NbdClient timeouts and the wall clock', () => {
  it('a wall clock stepping an hour forward between two requests does not fail them (read resolves)', async () => {
    // The read at offset 0 is answered after 100 ms, every other one at once.
    const path = await serve((req, s) => {
      const offset = Number(req.readBigUInt64BE(16));
      const reply = (): void => void s.write(chunk(req, DONE, OFFSET_DATA, offsetData(offset, Buffer.alloc(req.readUInt32BE(24), 0x11))));
      if (offset === 0) setTimeout(reply, 100);
      else reply();
    });
    const c = await NbdClient.connect({ path, requestTimeoutMs: 300 });
    const first = c.read(0, 4096);
    await sleep(20);
    stepWallClock(HOUR);
    // Answered before `first`, and sent an hour after it by the wall clock.
    expect(await outcome(c.read(4096, 4096), 1000)).toBe('fulfilled');
    expect(await outcome(first, 1000)).toBe('fulfilled');
    expect(await outcome(c.read(8192, 4096), 1000)).toBe('fulfilled');
    await c.disconnect();
  });

  it('a wall clock stepping an hour back does not stop a silent server from being timed out (read fails with UNAVAILABLE)', async () => {
    const path = await serve(() => undefined); // reads requests, never answers
    const c = await NbdClient.connect({ path, requestTimeoutMs: 200, disconnectTimeoutMs: 200 });
    const started = performance.now();
    const read = c.read(0, 4096);
    await sleep(20);
    stepWallClock(-HOUR);
    expect(await outcome(read, 3000)).toBe('UNAVAILABLE');
    expect(performance.now() - started).toBeGreaterThanOrEqual(190);
  });
});
