// proto.md, "Terminating the transmission phase": "If the client receives an ESHUTDOWN error it
// MUST initiate a soft disconnect" (and "SHOULD wait until there are no inflight requests first").
// A scripted server answers the first request with ESHUTDOWN and records what the client sends
// after it: the requests in flight are answered, nothing new is sent, then NBD_CMD_DISC.
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { outcome } from './helpers/outcome.js';
import { ScriptedServers } from './helpers/scripted-servers.js';
import { chunk, DONE, ERROR, errorBody, fakeServer, simpleReplyTo, type FakeServerOptions } from './helpers/raw-nbd.js';

// Numbers from proto.md.
const ESHUTDOWN = 108;
const EINVAL = 22;
const DISC = 2;
const typeOf = (req: Buffer): number => req.readUInt16BE(6);

const scripted = new ScriptedServers('nbd-esd-');
beforeAll(() => scripted.open());
afterAll(() => scripted.close());

/**
 * A 1 MiB server that takes two requests, fails the first with ESHUTDOWN (`shutdown` writes that
 * reply), answers the second with 512 bytes of 0x5a (a READ), then records the type of every
 * later request until the client hangs up, answering each with EINVAL; after NBD_CMD_DISC it
 * closes. `seen` resolves with those types.
 */
async function serve(shutdown: (req: Buffer, s: net.Socket) => void, options: FakeServerOptions = {}): Promise<{ path: string; seen: Promise<number[]> }> {
  let report: (types: number[]) => void = () => undefined;
  const seen = new Promise<number[]>((resolve) => (report = resolve));
  const server = fakeServer(
    1024 * 1024,
    async (s, raw) => {
      scripted.track(s);
      const later: number[] = [];
      try {
        const first = await raw.read(28);
        const second = await raw.read(28);
        shutdown(first, s);
        const structured = options.structuredContextId !== undefined;
        const data = Buffer.alloc(512, 0x5a);
        if (structured) s.write(chunk(second, DONE, 1, Buffer.concat([second.subarray(16, 24), data])));
        else s.write(Buffer.concat([simpleReplyTo(second, 0), data]));
        for (;;) {
          const req = await raw.read(28);
          later.push(typeOf(req));
          if (typeOf(req) === DISC) {
            s.end();
            break;
          }
          // Anything sent after ESHUTDOWN gets EINVAL, so a client that keeps going fails fast.
          s.write(structured ? chunk(req, DONE, ERROR, errorBody(EINVAL, 'sent after ESHUTDOWN')) : simpleReplyTo(req, EINVAL));
        }
      } catch {
        // the client hung up
      } finally {
        report(later);
      }
    },
    options,
  );
  return { path: await scripted.listen(server), seen };
}

/** Three reads with two in flight at most: the third waits for a slot when ESHUTDOWN arrives. */
async function scenario(path: string, structured: boolean): Promise<void> {
  const c = await NbdClient.connect({ path, exportName: 'x', maxInFlight: 2, structuredReplies: structured });
  const reads = [c.read(0, 512), c.read(512, 512), c.read(1024, 512)];
  const [first, second, third] = await Promise.allSettled(reads);
  expect(first).toMatchObject({ status: 'rejected', reason: { code: 'UNAVAILABLE', details: { nbdError: ESHUTDOWN } } });
  expect(second.status === 'fulfilled' && second.value.equals(Buffer.alloc(512, 0x5a))).toBe(true);
  expect(third).toMatchObject({ status: 'rejected', reason: { code: 'UNAVAILABLE' } });
  expect(await outcome(c.read(0, 512), 2000)).toBe('UNAVAILABLE');
  await expect(c.disconnect()).resolves.toBeUndefined();
}

describe('NbdClient on ESHUTDOWN: soft disconnect once the requests in flight are answered', () => {
  it('a simple reply with ESHUTDOWN: the read in flight is still answered, nothing more is sent, then NBD_CMD_DISC', async () => {
    const { path, seen } = await serve((req, s) => s.write(simpleReplyTo(req, ESHUTDOWN)));
    await scenario(path, false);
    expect(await seen).toEqual([DISC]);
  });

  it('an ERROR chunk with ESHUTDOWN (structured replies): the same', async () => {
    const { path, seen } = await serve((req, s) => s.write(chunk(req, DONE, ERROR, errorBody(ESHUTDOWN, 'going down'))), { structuredContextId: 1 });
    await scenario(path, true);
    expect(await seen).toEqual([DISC]);
  });
});
