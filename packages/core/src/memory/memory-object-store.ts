import type { ByteRange } from '../contracts/block-device.js';
import type { ObjectInfo, ObjectPartWriter, ObjectStore, ObjectStoreCapabilities, PutOptions } from '../contracts/object-store.js';
import { CairnError } from '../errors.js';
import { assertObjectKey, assertObjectPrefix, assertRange } from '../util/validate.js';

/** The reference ObjectStore: a map in memory. Used to test the chunked repository and the suite. */
export class MemoryObjectStore implements ObjectStore {
  readonly capabilities: ObjectStoreCapabilities = { atomicIfAbsent: true, writeInParts: true };
  private readonly objects = new Map<string, { data: Buffer; modifiedAt: string }>();

  constructor(readonly name = 'memory') {}

  async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    assertObjectKey(key, this.name);
    if (options.ifAbsent && this.objects.has(key)) {
      throw new CairnError('ALREADY_EXISTS', `object ${key} already exists`, { driver: this.name });
    }
    this.objects.set(key, { data: Buffer.from(data), modifiedAt: new Date().toISOString() });
  }

  /** Parts are copied as they come and published by put at commit. */
  async openWrite(key: string, options: PutOptions = {}): Promise<ObjectPartWriter> {
    assertObjectKey(key, this.name);
    const parts: Buffer[] = [];
    let finished = false;
    const done = (what: string): CairnError => new CairnError('INTERNAL', `${what} of ${key} after its commit or abort`, { driver: this.name });
    return {
      append: async (data) => {
        if (finished) throw done('append');
        parts.push(Buffer.from(data));
      },
      commit: async () => {
        if (finished) throw done('commit');
        finished = true;
        await this.put(key, Buffer.concat(parts.splice(0)), options);
      },
      abort: async () => {
        finished = true;
        parts.length = 0;
      },
    };
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    const o = this.lookup(key);
    if (!range) return Buffer.from(o.data);
    assertRange(range.offset, range.length, o.data.length, this.name);
    return Buffer.from(o.data.subarray(range.offset, range.offset + range.length));
  }

  async head(key: string): Promise<ObjectInfo> {
    const o = this.lookup(key);
    return { key, size: o.data.length, modifiedAt: o.modifiedAt };
  }

  async delete(key: string): Promise<void> {
    assertObjectKey(key, this.name);
    this.objects.delete(key);
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    assertObjectPrefix(prefix, this.name);
    for (const [key, o] of [...this.objects]) {
      if (key.startsWith(prefix)) yield { key, size: o.data.length, modifiedAt: o.modifiedAt };
    }
  }

  private lookup(key: string): { data: Buffer; modifiedAt: string } {
    assertObjectKey(key, this.name);
    const o = this.objects.get(key);
    if (!o) throw new CairnError('NOT_FOUND', `object ${key} not found`, { driver: this.name });
    return o;
  }
}
