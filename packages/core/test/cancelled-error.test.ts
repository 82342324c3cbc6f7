import assert from 'node:assert/strict';
import { describe, it } from 'vitest';
import { CairnError, cancelledError, throwIfAborted } from '../src/errors.js';
import { RequestOrder } from '../src/flow/request-order.js';

/**
 * Contract (errors.ts cancelledError): an aborted signal's reason is passed on when it is a
 * CairnError CANCELLED (with `keep: 'any'`, any CairnError); any other reason becomes the cause
 * of a new CANCELLED with the given message and driver.
 */
describe('cancelledError', () => {
  it('passes on a CANCELLED reason as it is', () => {
    const why = new CairnError('CANCELLED', 'backup cancelled by SIGINT');
    assert.equal(cancelledError(AbortSignal.abort(why), { driver: 'posix' }), why);
    assert.throws(() => throwIfAborted(AbortSignal.abort(why), 'posix'), (err) => err === why);
  });

  it('wraps any other reason as the cause of a new CANCELLED, with the message and driver', () => {
    for (const reason of [new Error('cancelled by the test'), new CairnError('UNAVAILABLE', 'connection lost'), undefined]) {
      const signal = AbortSignal.abort(reason);
      const err = cancelledError(signal, { message: 'waiting cancelled', driver: 'posix' });
      assert.equal(err.code, 'CANCELLED');
      assert.equal(err.message, '[posix] waiting cancelled');
      assert.equal(err.driver, 'posix');
      assert.equal(err.cause, signal.reason);
    }
    assert.equal(cancelledError(AbortSignal.abort()).message, 'operation cancelled');
  });

  it("with keep: 'any', passes on a CairnError of any code, and wraps the rest as CANCELLED", () => {
    const lost = new CairnError('UNAVAILABLE', 'connection lost');
    assert.equal(cancelledError(AbortSignal.abort(lost), { keep: 'any' }), lost);
    const plain = new Error('cancelled by the test');
    const err = cancelledError(AbortSignal.abort(plain), { keep: 'any' });
    assert.equal(err.code, 'CANCELLED');
    assert.equal(err.cause, plain);
  });
});

describe("RequestOrder's turn, cancelled while waiting", () => {
  it("rejects with the signal's CairnError reason, or CANCELLED when the reason is none (a plain Error, a timeout)", async () => {
    const order = new RequestOrder();
    const first = order.take('v');
    const lost = new CairnError('UNAVAILABLE', 'connection lost');
    await assert.rejects(order.take('v').wait(AbortSignal.abort(lost)), (err) => err === lost);
    await assert.rejects(order.take('v').wait(AbortSignal.abort(new Error('cancelled by the test'))), { code: 'CANCELLED' });
    const timedOut = new DOMException('The operation was aborted due to timeout', 'TimeoutError');
    await assert.rejects(order.take('v').wait(AbortSignal.abort(timedOut)), { code: 'CANCELLED' });
    first.pass();
  });
});
