import type { ByteRange } from '../contracts/block-device.js';
import type { CallOptions, ObjectInfo, ObjectPartWriter, ObjectStore, ObjectStoreCapabilities, PutOptions } from '../contracts/object-store.js';
import { CairnError, throwIfAborted } from '../errors.js';
import { assertObjectKey, assertObjectPrefix, assertRange } from '../util/validate.js';

/**
 * The reference ObjectStore: a map in memory. Used to test the chunked repository and the suite.
 *
 * Cancellable (ObjectStore's CallOptions): every call checks its signal after validating its
 * arguments and before it has any effect, and then runs to its end in one step (nothing in it
 * waits), so a call whose signal was aborted when it started rejects `CANCELLED` and changes
 * nothing, and one aborted later has already settled. A writer in parts checks the signal of
 * openWrite on every append and at commit; list checks it before each object it yields.
 */
export class MemoryObjectStore implements ObjectStore {
  readonly capabilities: ObjectStoreCapabilities = { atomicIfAbsent: true, writeInParts: true, cancellable: true };
  private readonly objects = new Map<string, { data: Buffer; modifiedAt: string }>();

  constructor(readonly name = 'memory') {}

  async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    assertObjectKey(key, this.name);
    this.checkSignal(options.signal);
    if (options.ifAbsent && this.objects.has(key)) {
      throw new CairnError('ALREADY_EXISTS', `object ${key} already exists`, { driver: this.name });
    }
    this.objects.set(key, { data: Buffer.from(data), modifiedAt: new Date().toISOString() });
  }

  /**
   * Parts are copied as they come and published by put at commit (with openWrite's options, so
   * its signal is checked there last). After a failed append every later append and the commit
   * fail with its error.
   */
  async openWrite(key: string, options: PutOptions = {}): Promise<ObjectPartWriter> {
    assertObjectKey(key, this.name);
    this.checkSignal(options.signal);
    const parts: Buffer[] = [];
    let finished = false;
    let failure: unknown;
    const done = (what: string): CairnError => new CairnError('INTERNAL', `${what} of ${key} after its commit or abort`, { driver: this.name });
    return {
      append: async (data) => {
        if (finished) throw done('append');
        if (failure) throw failure;
        try {
          this.checkSignal(options.signal);
        } catch (err) {
          failure = err;
          parts.length = 0;
          throw err;
        }
        parts.push(Buffer.from(data));
      },
      commit: async () => {
        if (finished) throw done('commit');
        finished = true;
        const body = Buffer.concat(parts.splice(0));
        if (failure) throw failure;
        await this.put(key, body, options);
      },
      abort: async () => {
        finished = true;
        parts.length = 0;
      },
    };
  }

  async get(key: string, range?: ByteRange, options: CallOptions = {}): Promise<Buffer> {
    const o = this.lookup(key, options.signal);
    if (!range) return Buffer.from(o.data);
    assertRange(range.offset, range.length, o.data.length, this.name, `object ${key}`);
    return Buffer.from(o.data.subarray(range.offset, range.offset + range.length));
  }

  async head(key: string, options: CallOptions = {}): Promise<ObjectInfo> {
    const o = this.lookup(key, options.signal);
    return { key, size: o.data.length, modifiedAt: o.modifiedAt };
  }

  async delete(key: string, options: CallOptions = {}): Promise<void> {
    assertObjectKey(key, this.name);
    this.checkSignal(options.signal);
    this.objects.delete(key);
  }

  async *list(prefix: string, options: CallOptions = {}): AsyncIterable<ObjectInfo> {
    assertObjectPrefix(prefix, this.name);
    this.checkSignal(options.signal);
    for (const [key, o] of [...this.objects]) {
      if (!key.startsWith(prefix)) continue;
      this.checkSignal(options.signal);
      yield { key, size: o.data.length, modifiedAt: o.modifiedAt };
    }
  }

  /** `CANCELLED`, tagged with this store's name, when `signal` is aborted. */
  private checkSignal(signal: AbortSignal | undefined): void {
    throwIfAborted(signal, this.name);
  }

  private lookup(key: string, signal: AbortSignal | undefined): { data: Buffer; modifiedAt: string } {
    assertObjectKey(key, this.name);
    this.checkSignal(signal);
    const o = this.objects.get(key);
    if (!o) throw new CairnError('NOT_FOUND', `object ${key} not found`, { driver: this.name });
    return o;
  }
}
