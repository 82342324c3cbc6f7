import { CairnError } from '@cairn/core';
import { describe, expect, it } from 'vitest';
import { hintFor, withoutHint } from '../src/output/error-hints.js';

// Which errors get the full-file-system hint: a store's `details.errno`, or a system error's
// `code`, anywhere in the chain of causes; no other error.
const sysError = (code: string): Error => Object.assign(new Error(`${code}: something`), { code });

describe('error hints', () => {
  it('hints at freeing space for ENOSPC and EDQUOT, at any depth of causes', () => {
    const wrapped = new CairnError('UNAVAILABLE', 'backup failed', { cause: new CairnError('UNAVAILABLE', 'put x', { cause: sysError('EDQUOT') }) });
    expect(hintFor(wrapped)).toMatch(/full: free space on it/);
    expect(hintFor(new CairnError('UNAVAILABLE', 'put x', { details: { errno: 'ENOSPC' } }))).toMatch(/cairn repo gc/);
    expect(hintFor(sysError('ENOSPC'))).toBeDefined();
  });

  it('gives no hint for other errors, nor for a message that merely mentions ENOSPC', () => {
    expect(hintFor(new CairnError('UNAVAILABLE', 'put x: EIO', { cause: sysError('EIO') }))).toBeUndefined();
    expect(hintFor(new CairnError('NOT_FOUND', 'no backup named ENOSPC'))).toBeUndefined();
    expect(hintFor(undefined)).toBeUndefined();
    const loop: { cause?: unknown } = {};
    loop.cause = loop; // a cycle ends the walk instead of hanging it
    expect(hintFor(loop)).toBeUndefined();
  });

  it('gives no hint for an error marked withoutHint (stdout on a full device), though its cause is ENOSPC', () => {
    const stdout = withoutHint(new CairnError('UNAVAILABLE', 'output could not be written to stdout', { cause: sysError('ENOSPC'), details: { errno: 'ENOSPC' } }));
    expect(hintFor(stdout)).toBeUndefined();
    expect(hintFor(new CairnError('UNAVAILABLE', 'put x', { cause: stdout.cause }))).toBeDefined(); // only the marked error
  });
});
