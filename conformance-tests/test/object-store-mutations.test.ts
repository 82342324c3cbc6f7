import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PosixObjectStore } from '@cairn/backup-posix';
import {
  CairnError,
  DIRECT_IO_ALIGN,
  MemoryObjectStore,
  throwIfAborted,
  type ByteRange,
  type CallOptions,
  type GetIntoOptions,
  type ObjectInfo,
  type ObjectPartWriter,
  type ObjectStore,
  type PutOptions,
} from '@cairn/core';
import { objectStoreGroups, runCase, type Case, type ObjectStoreContext } from '../src/index.js';

// Hand mutation testing of the object-store groups: each variant wraps a real store (the memory
// reference, or the posix store on a fresh directory) and breaks ONE documented clause of
// contracts/object-store.ts in a way that loses or corrupts repository data. The first block's
// variants were caught by no case before the case named, which now catches them; each passes every
// other case of the groups for its capabilities. The second block's variants were already caught.

type Hooks = { setup: () => Promise<ObjectStoreContext>; teardown?: (ctx: ObjectStoreContext) => Promise<void> };

let seq = 0;
const prefix = (): string => `m${++seq}`;

/** A fresh memory store, changed by `mutate`. */
const memory = (mutate: (s: ObjectStore) => void): Hooks => ({
  setup: async () => {
    const store: ObjectStore = new MemoryObjectStore();
    mutate(store);
    return { store, prefix: prefix(), listKeys: 60 };
  },
});

/** A posix store on a fresh temporary directory, changed by `mutate`; teardown removes the directory. */
const onPosix = (mutate: (s: ObjectStore) => void): Hooks => ({
  setup: async () => {
    const store = await PosixObjectStore.open({ directory: await mkdtemp(join(tmpdir(), 'cairn-os-mut-')) });
    mutate(store);
    return { store, prefix: prefix(), listKeys: 60 };
  },
  teardown: async (ctx) => rm((ctx.store as PosixObjectStore).directory, { recursive: true, force: true }),
});

/** The memory store with getInto (get, then a copy into `into`) and the readInto capability. */
function withGetInto(store: ObjectStore): void {
  Object.assign(store, { capabilities: { ...store.capabilities, readInto: true } });
  store.getInto = async (key: string, range: ByteRange, into: Buffer, o: GetIntoOptions = {}) => void (await store.get(key, range, o)).copy(into);
}

/**
 * The memory store with sweepTemp: parts of a write in parts are held as a temporary (with the
 * time of its last append) until commit puts them; sweepTemp drops temporaries older than its age,
 * and the writer of a dropped one then fails with UNAVAILABLE. `broken` changes one thing.
 */
function withSweep(store: ObjectStore, broken?: 'commit-what-is-left' | 'sweep-tmp-named-objects'): void {
  Object.assign(store, { capabilities: { ...store.capabilities, sweepsTemp: true } });
  const temps = new Map<number, { parts: Buffer[]; at: number }>();
  let ids = 0;
  const openWrite = store.openWrite!.bind(store);
  store.openWrite = async (key: string, o: PutOptions = {}): Promise<ObjectPartWriter> => {
    const inner = await openWrite(key, o);
    const id = ++ids;
    temps.set(id, { parts: [], at: Date.now() });
    let finished = false;
    const temp = () => {
      const t = temps.get(id) ?? (broken === 'commit-what-is-left' ? { parts: [], at: Date.now() } : undefined);
      if (!t) throw new CairnError('UNAVAILABLE', `the temporary of ${key} was swept`);
      temps.set(id, t);
      return t;
    };
    return {
      append: async (data) => {
        await inner.append(new Uint8Array(0)); // the writer's own checks: signal, after commit or abort
        const t = temp();
        t.parts.push(Buffer.from(data));
        t.at = Date.now();
      },
      commit: async () => {
        if (finished) return inner.commit(); // its error: a commit after a commit or an abort
        finished = true;
        let parts: Buffer[];
        try {
          parts = temp().parts;
        } catch (err) {
          await inner.abort();
          throw err;
        } finally {
          temps.delete(id);
        }
        for (const p of parts) await inner.append(p).catch(() => undefined); // a failure shows at commit
        return inner.commit();
      },
      abort: async () => {
        finished = true;
        temps.delete(id);
        return inner.abort();
      },
    };
  };
  store.sweepTemp = async (olderThanMs: number) => {
    let n = 0;
    for (const [id, t] of temps) if (t.at <= Date.now() - olderThanMs) n += Number(temps.delete(id));
    if (broken === 'sweep-tmp-named-objects') {
      for await (const o of store.list('')) if (/\.(tmp|part)$|^\.tmp/.test(posix.basename(o.key)) && Date.parse(o.modifiedAt) <= Date.now() - olderThanMs) await store.delete(o.key), n++;
    }
    return n;
  };
}

const groupsOf = async (hooks: Hooks): Promise<Case<ObjectStoreContext>[]> => {
  const ctx = await hooks.setup();
  try {
    return objectStoreGroups(ctx.store.capabilities).flatMap((g) => g.cases);
  } finally {
    await hooks.teardown?.(ctx);
  }
};

const named = (cases: Case<ObjectStoreContext>[], start: string): Case<ObjectStoreContext> => {
  const found = cases.filter((c) => c.name.startsWith(start));
  if (found.length !== 1) throw new Error(`${found.length} cases named ${start}`);
  return found[0]!;
};

/** The case named `target` fails with `message` on the variant; every other case of its groups passes. */
async function caughtOnlyBy(hooks: Hooks, target: string, message: RegExp): Promise<void> {
  const cases = await groupsOf(hooks);
  const c = named(cases, target);
  for (const other of cases) if (other !== c) await runCase(other, hooks);
  await expect(runCase(c, hooks)).rejects.toThrow(message);
}

/** The case named `target` fails with `message` on the variant (one the suite caught before). */
async function caughtBy(hooks: Hooks, target: string, message: RegExp): Promise<void> {
  await expect(runCase(named(await groupsOf(hooks), target), hooks)).rejects.toThrow(message);
}

describe('object-store mutations the suite caught only with the cases added for them', () => {
  it('a ranged get whose bounds check lets a range end one byte past the object (a short read)', async () => {
    const h = memory((s) => {
      const get = s.get.bind(s);
      s.get = async (key, range, o) => {
        if (!range) return get(key, undefined, o);
        const size = (await s.head(key, o)).size;
        return range.offset + range.length === size + 1 ? get(key, { offset: range.offset, length: range.length - 1 }, o) : get(key, range, o);
      };
    });
    await caughtOnlyBy(h, 'a range ending at the last byte', /get range 0\+1001 should fail with INVALID_INPUT but succeeded/);
  });

  it('a head that answers from a cache its puts never update (a stale size after a replace)', async () => {
    const h = memory((s) => {
      const cache = new Map<string, ObjectInfo>();
      const head = s.head.bind(s);
      const del = s.delete.bind(s);
      s.head = async (key, o) => cache.get(key) ?? head(key, o).then((i) => (cache.set(key, i), i));
      s.delete = async (key, o) => (cache.delete(key), del(key, o));
    });
    await caughtOnlyBy(h, 'after a replacing put, head and list', /head after a longer replacement/);
  });

  it('a delete that leaves a tombstone which put(ifAbsent) takes for the object (a chunk never stored again)', async () => {
    const h = memory((s) => {
      const gone = new Set<string>();
      const put = s.put.bind(s);
      const del = s.delete.bind(s);
      s.delete = async (key, o) => (await del(key, o), void gone.add(key));
      s.put = async (key, data, o) => {
        if (o?.ifAbsent && gone.has(key)) throw new CairnError('ALREADY_EXISTS', `${key} exists (a tombstone)`);
        return put(key, data, o);
      };
    });
    await caughtOnlyBy(h, 'a deleted key is free again', /exists \(a tombstone\)/);
  });

  it('a put(ifAbsent) that answers ALREADY_EXISTS where the key is a parent of stored keys', async () => {
    const h = memory((s) => {
      const put = s.put.bind(s);
      s.put = async (key, data, o) => {
        if (o?.ifAbsent) for await (const _ of s.list(`${key}/`)) throw new CairnError('ALREADY_EXISTS', `${key} exists`);
        return put(key, data, o);
      };
    });
    await caughtOnlyBy(h, 'a put at a key that is the parent or the child', /put\(ifAbsent\) at a parent of keys should store or fail with CONFLICT/);
  });

  it('a posix put(ifAbsent) that answers ALREADY_EXISTS where it found a directory of other keys', async () => {
    const h = onPosix((s) => {
      const put = s.put.bind(s);
      s.put = async (key, data, o) =>
        put(key, data, o).catch((err: unknown) => {
          throw o?.ifAbsent && (err as { code?: unknown }).code === 'CONFLICT' ? new CairnError('ALREADY_EXISTS', `${key} exists (a directory)`) : err;
        });
    });
    await caughtOnlyBy(h, 'a put at a key that is the parent or the child', /put\(ifAbsent\) at a parent of keys should store or fail with CONFLICT/);
  });

  it('a posix delete that normalizes its key, so `p/x/../victim` removes p/victim', async () => {
    const h = onPosix((s) => {
      const del = s.delete.bind(s);
      s.delete = async (key, o) => del(posix.normalize(key), o);
    });
    await caughtOnlyBy(h, 'every call refuses a malformed key', /delete\(".*\/x\/\.\.\/victim"\) should fail with INVALID_INPUT but succeeded/);
  });

  it('a put that publishes its first half, then the whole (a reader sees a part of the object)', async () => {
    const h = memory((s) => {
      const put = s.put.bind(s);
      s.put = async (key, data, o) => {
        if (!o?.ifAbsent && !o?.signal && data.length > 1) {
          await put(key, data.subarray(0, data.length >> 1));
          await new Promise((r) => setImmediate(r));
        }
        return put(key, data, o);
      };
    });
    await caughtOnlyBy(h, 'gets racing a replacing put', /get 0 during the put \(the new object\): length/);
  });

  it('a delete by prefix, as `rm -r` of a key\'s place: deleting `p/a` also removes `p/a/b` and `p/ab`', async () => {
    const h = memory((s) => {
      const del = s.delete.bind(s);
      s.delete = async (key, o) => {
        const under: string[] = [];
        for await (const i of s.list(key, o)) under.push(i.key);
        for (const k of [key, ...under]) await del(k, o);
      };
    });
    await caughtOnlyBy(h, 'delete removes exactly its key', /objects after the deletes/);
  });

  it('a list that also yields keys the prefix starts with (`p/x` listed for `p/xy`)', async () => {
    const h = memory((s) => {
      const list = s.list.bind(s);
      s.list = async function* (p: string, o?: CallOptions): AsyncIterable<ObjectInfo> {
        const dir = p.slice(0, p.lastIndexOf('/') + 1);
        for await (const i of list(dir, o)) if (i.key.startsWith(p) || p.startsWith(i.key)) yield i;
      };
    });
    await caughtOnlyBy(h, 'list matches keys by string prefix', /list\(".*\/xy"\)/);
  });

  it('a list that walks at most three levels below the prefix\'s directory', async () => {
    const h = memory((s) => {
      const list = s.list.bind(s);
      s.list = async function* (p: string, o?: CallOptions): AsyncIterable<ObjectInfo> {
        const depth = p.split('/').length;
        for await (const i of list(p, o)) if (i.key.split('/').length - depth < 3) yield i;
      };
    });
    await caughtOnlyBy(h, 'list matches keys by string prefix', /list\(".*\/x"\)/);
  });

  it('a getInto with `once` that reads whole aligned blocks into whatever room the buffer has around `into`', async () => {
    const h = memory((s) => {
      withGetInto(s);
      const getInto = s.getInto!.bind(s);
      s.getInto = async (key, range, into, o) => {
        const before = range.offset % DIRECT_IO_ALIGN;
        const end = Math.ceil((range.offset + range.length) / DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN;
        const size = (await s.head(key)).size;
        const to = Math.min(end, size);
        if (!o?.once || into.byteOffset < before || into.byteOffset - before + (to - range.offset + before) > into.buffer.byteLength) return getInto(key, range, into, o);
        const span = Buffer.from(into.buffer, into.byteOffset - before, to - range.offset + before);
        (await s.get(key, { offset: range.offset - before, length: span.length })).copy(span);
      };
    });
    await caughtOnlyBy(h, 'getInto into a window of a larger buffer', /misaligned memory, once true, range 123457\+100000: bytes before the window untouched/);
  });

  it('a part writer that keeps a reference to each part instead of its bytes (a reused buffer rewrites the object)', async () => {
    const h = memory((s) => {
      const openWrite = s.openWrite!.bind(s);
      s.openWrite = async (key, o) => {
        const w = await openWrite(key, o);
        const held: Uint8Array[] = [];
        return {
          append: async (data) => (await w.append(new Uint8Array(0)), void held.push(data)),
          commit: async () => {
            for (const d of held.splice(0)) await w.append(d).catch(() => undefined);
            return w.commit();
          },
          abort: () => w.abort(),
        };
      };
    });
    await caughtOnlyBy(h, 'a part\'s memory is the caller\'s again', /committed object: bytes differ first at offset 0/);
  });

  it('a list that checks its signal when it starts only', async () => {
    const h = memory((s) => {
      const list = s.list.bind(s);
      s.list = async function* (p: string, o: CallOptions = {}): AsyncIterable<ObjectInfo> {
        throwIfAborted(o.signal, 'memory');
        yield* list(p);
      };
    });
    await caughtOnlyBy(h, 'a list whose signal aborts mid-iteration', /the step after the abort should fail with CANCELLED but succeeded/);
  });

  it('a getInto that rejects CANCELLED at once but lets its read land in `into` afterwards', async () => {
    const h = memory((s) => {
      withGetInto(s);
      s.getInto = async (key, range, into, o = {}) => {
        const late = s.get(key, range).then((b) => new Promise<void>((r) => setTimeout(() => r(void b.copy(into)), 5)));
        if (!o.signal) return late;
        late.catch(() => undefined);
        const signal = o.signal;
        throwIfAborted(signal, 'memory');
        return Promise.race([late, new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(new CairnError('CANCELLED', 'cancelled'))))]);
      };
    });
    await caughtOnlyBy(h, 'a getInto aborted while it runs', /getInto wrote into `into` after it settled/);
  });

  it('a put(ifAbsent) that creates the object with its first half, then writes the whole (a reader or a refused rival sees a part)', async () => {
    const h = memory((s) => {
      const put = s.put.bind(s);
      s.put = async (key, data, o) => {
        if (!o?.ifAbsent || data.length < 2) return put(key, data, o);
        await put(key, data.subarray(0, data.length >> 1), o);
        await new Promise((r) => setImmediate(r));
        return put(key, data, { ...o, ifAbsent: false });
      };
    });
    await caughtOnlyBy(h, 'gets racing a put(ifAbsent) of a new key', /get 0 during the put: length/);
  });

  it('a part writer whose commit(ifAbsent) checks for the key, then publishes a step later (two commits both win)', async () => {
    const h = memory((s) => {
      const openWrite = s.openWrite!.bind(s);
      s.openWrite = async (key, o = {}) => {
        const w = await openWrite(key, { ...o, ifAbsent: false });
        return {
          ...w,
          commit: async () => {
            if (o.ifAbsent && (await s.head(key).then(() => true, () => false))) {
              await w.abort();
              throw new CairnError('ALREADY_EXISTS', `${key} exists`);
            }
            await new Promise((r) => setImmediate(r));
            return w.commit();
          },
        };
      };
    });
    await caughtOnlyBy(h, 'of concurrent commit(ifAbsent) calls of eight writers', /winners \(8 is the put\): 0,1/);
  });

  it('a list that resumes by position in an order where a replaced key moves to the end (a key listed twice)', async () => {
    const h = memory((s) => {
      const put = s.put.bind(s);
      const del = s.delete.bind(s);
      const list = s.list.bind(s);
      // A memory call runs to its end in one step, so this delete and put are one step too.
      s.put = (key, data, o) => {
        if (!o?.ifAbsent && !o?.signal?.aborted) void del(key).catch(() => undefined);
        return put(key, data, o);
      };
      s.list = async function* (p: string, o?: CallOptions): AsyncIterable<ObjectInfo> {
        for (let i = 0; ; i++) {
          let at = 0;
          let next: ObjectInfo | undefined;
          for await (const info of list(p, o)) if (at++ === i) (next = info);
          if (!next) return;
          await new Promise((r) => setImmediate(r));
          yield next;
        }
      };
    });
    await caughtOnlyBy(h, 'a list run while some of its keys are replaced', /keys listed more than once/);
  });

  it('head and list that give every object the epoch as its modifiedAt', async () => {
    const h = memory((s) => {
      const epoch = new Date(0).toISOString();
      const head = s.head.bind(s);
      const list = s.list.bind(s);
      s.head = async (key, o) => ({ ...(await head(key, o)), modifiedAt: epoch });
      s.list = async function* (p: string, o?: CallOptions): AsyncIterable<ObjectInfo> {
        for await (const info of list(p, o)) yield { ...info, modifiedAt: epoch };
      };
    });
    await caughtOnlyBy(h, 'head and list give the time of the last write', /list after the put: modifiedAt 1970-01-01T00:00:00\.000Z is more than 2000 ms before/);
  });

  it('head and list that give an object the time of its first write after a replacing put', async () => {
    const h = memory((s) => {
      const first = new Map<string, string>();
      const put = s.put.bind(s);
      const del = s.delete.bind(s);
      const head = s.head.bind(s);
      const list = s.list.bind(s);
      const timed = (info: ObjectInfo): ObjectInfo => ({ ...info, modifiedAt: first.get(info.key) ?? info.modifiedAt });
      s.put = async (key, data, o) => {
        await put(key, data, o);
        await head(key).then((i) => void (first.has(key) || first.set(key, i.modifiedAt)), () => undefined);
      };
      s.delete = async (key, o) => (await del(key, o), void first.delete(key));
      s.head = async (key, o) => timed(await head(key, o));
      s.list = async function* (p: string, o?: CallOptions): AsyncIterable<ObjectInfo> {
        for await (const info of list(p, o)) yield timed(info);
      };
    });
    await caughtOnlyBy(h, 'head and list give the time of the last write', /head after the replacing put: modifiedAt .* is not later than the first write's/);
  });

  it('a posix sweepTemp that ignores its age (a live writer\'s file goes and its commit fails)', async () => {
    const h = onPosix((s) => {
      const sweep = s.sweepTemp!.bind(s);
      s.sweepTemp = async () => sweep(0);
    });
    await caughtOnlyBy(h, 'sweepTemp removes no object', /live: the temporary file vanished before it was published/);
  });

  it('a sweepTemp that takes objects named like temporaries (`x.tmp`) for leftovers', async () => {
    const h = memory((s) => withSweep(s, 'sweep-tmp-named-objects'));
    await caughtOnlyBy(h, 'sweepTemp removes no object', /x\.tmp not found/);
  });

  it('a swept writer that commits the parts appended after the sweep (a partial object)', async () => {
    const h = memory((s) => withSweep(s, 'commit-what-is-left'));
    await caughtOnlyBy(h, 'a writer whose parts a sweep', /the object of a swept writer that committed: length/);
  });

  it('the sweeping memory store that the sweep variants break passes every case', async () => {
    const h = memory((s) => withSweep(s));
    for (const c of await groupsOf(h)) await runCase(c, h);
  });
});

describe('object-store mutations the suite already caught', () => {
  const cases: [string, Hooks, string, RegExp][] = [
    [
      'a put(ifAbsent) that replaces the object',
      memory((s) => {
        const put = s.put.bind(s);
        s.put = (k, d, o) => put(k, d, { ...o, ifAbsent: false });
      }),
      'put(ifAbsent) of an existing key',
      /ALREADY_EXISTS but succeeded/,
    ],
    [
      'a ranged get one byte short at the end',
      memory((s) => {
        const get = s.get.bind(s);
        s.get = async (k, r, o) => (r && r.length > 1 ? (await get(k, r, o)).subarray(0, r.length - 1) : get(k, r, o));
      }),
      'get(range) returns exactly',
      /length/,
    ],
    [
      'a list that yields one key twice',
      memory((s) => {
        const list = s.list.bind(s);
        s.list = async function* (p: string, o?: CallOptions) {
          let first = true;
          for await (const i of list(p, o)) {
            yield i;
            if (first) yield i;
            first = false;
          }
        };
      }),
      'list(prefix) returns every key',
      /count/,
    ],
    [
      'a delete of a missing key that fails NOT_FOUND',
      memory((s) => {
        const del = s.delete.bind(s);
        s.delete = async (k, o) => (await s.head(k), del(k, o));
      }),
      'delete removes an object and is idempotent',
      /not found/,
    ],
    [
      'a put that accepts `..` in keys',
      memory((s) => {
        const put = s.put.bind(s);
        s.put = (k, d, o) => put(k.replaceAll('..', 'dotdot'), d, o);
      }),
      'malformed keys fail',
      /INVALID_INPUT but succeeded/,
    ],
    ...partWriterVariants(),
    [
      'a getInto that resolves before it fills `into`',
      memory((s) => {
        withGetInto(s);
        s.getInto = async (k, r, into) => void s.get(k, r).then((b) => setImmediate(() => b.copy(into)));
      }),
      'getInto fills exactly',
      /bytes differ/,
    ],
  ];
  for (const [what, hooks, target, message] of cases) it(what, () => caughtBy(hooks, target, message));
});

/** Part-writer variants: a writer changed by `change` (the memory store's writer inside). */
function partWriterVariants(): [string, Hooks, string, RegExp][] {
  const writer = (change: (w: ObjectPartWriter, s: ObjectStore, key: string, o: PutOptions) => ObjectPartWriter): Hooks =>
    memory((s) => {
      const openWrite = s.openWrite!.bind(s);
      s.openWrite = async (key, o = {}) => change(await openWrite(key, o), s, key, o);
    });
  return [
    [
      'a part writer that publishes at its first append',
      writer((w, s, key) => ({ ...w, append: async (d) => (await w.append(d), await s.put(key, d)) })),
      'parts of any size and alignment',
      /head before commit should fail with NOT_FOUND/,
    ],
    [
      'a part writer whose overlapping appends land in completion order (small parts first)',
      writer((w) => ({ ...w, append: async (d) => (await new Promise((r) => setTimeout(r, Math.ceil(d.length / 65536))), w.append(d)) })),
      'parts of any size and alignment',
      /committed object: bytes differ/,
    ],
    [
      'a part writer whose commit ignores ifAbsent',
      writer((w, s, key) => {
        const parts: Uint8Array[] = [];
        return { ...w, append: async (d) => (await w.append(d), void parts.push(Buffer.from(d))), commit: async () => (await w.abort(), s.put(key, Buffer.concat(parts))) };
      }),
      'commit with no parts publishes an empty object',
      /ALREADY_EXISTS but succeeded/,
    ],
    [
      'a list that also yields the keys of writes in parts still open',
      memory((s) => {
        const open = new Set<string>();
        const openWrite = s.openWrite!.bind(s);
        s.openWrite = async (key, o) => {
          const w = await openWrite(key, o);
          open.add(key);
          const done = () => void open.delete(key);
          return { append: w.append, commit: () => w.commit().finally(done), abort: () => w.abort().finally(done) };
        };
        const list = s.list.bind(s);
        s.list = async function* (p: string, o?: CallOptions) {
          yield* list(p, o);
          for (const key of open) if (key.startsWith(p)) yield { key, size: 0, modifiedAt: new Date().toISOString() };
        };
      }),
      'parts of any size and alignment',
      /listed before commit/,
    ],
    [
      'a part writer whose abort after a commit deletes the object',
      writer((w, s, key) => ({ ...w, abort: async () => (await w.abort(), s.delete(key)) })),
      'parts of any size and alignment',
      /not found/,
    ],
  ];
}
