import { describe, expect, it } from 'vitest';
import { MemoryObjectStore } from '../src/index.js';
import { assertRange } from '../src/util/validate.js';

describe('assertRange', () => {
  it('names what the range is of: the device by default, the object for an object store', async () => {
    expect(() => assertRange(10, 5, 12)).toThrow(/range \[10, \+5\) is outside the device of 12 bytes/);
    const store = new MemoryObjectStore('mem');
    await store.put('packs/00/p', Buffer.alloc(12));
    await expect(store.get('packs/00/p', { offset: 10, length: 5 })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringContaining('is outside object packs/00/p of 12 bytes'),
      details: { offset: 10, length: 5, size: 12 },
    });
  });
});
