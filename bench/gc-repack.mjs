/**
 * Benchmark (not a test): GC's repack over a store with a fixed latency per get (an S3/Swift-like
 * store, roughly). Backup `all` of 2·live chunks and backup `even` of its even-numbered chunks;
 * `all` is deleted, so that the live chunks are spread over packs that GC all repacks (with 256
 * KiB chunks and 1 MiB packs: 3 chunks a pack, 1 or 2 of them live). Prints the GC's wall time,
 * the most ranged gets of packs in flight at once and the most distinct packs read at once.
 *
 * usage: node bench/gc-repack.mjs [live=800] [latencyMs=5] [rounds=3]
 * Memory: the store holds the repository (2·live chunks of 256 KiB, uncompressed) in memory.
 */
import { ChunkedBackupService, MemoryObjectStore } from '@cairn/core';

const CHUNK = 256 * 1024;
const MiB = 1024 * 1024;
const live = Number(process.argv[2] ?? 800);
const latencyMs = Number(process.argv[3] ?? 5);
const rounds = Number(process.argv[4] ?? 3);

/** A memory store whose every get waits `latencyMs` first, counting the gets of packs in flight. */
class LatencyStore extends MemoryObjectStore {
  gets = 0;
  maxGets = 0;
  maxPacks = 0;
  #reading = new Map();
  async get(key, range, options) {
    const pack = key.startsWith('packs/');
    if (pack) {
      this.gets++;
      this.maxGets = Math.max(this.maxGets, this.gets);
      this.#reading.set(key, (this.#reading.get(key) ?? 0) + 1);
      this.maxPacks = Math.max(this.maxPacks, this.#reading.size);
    }
    try {
      await new Promise((resolve) => setTimeout(resolve, latencyMs));
      return await super.get(key, range, options);
    } finally {
      if (pack) {
        this.gets--;
        const n = this.#reading.get(key) - 1;
        if (n === 0) this.#reading.delete(key);
        else this.#reading.set(key, n);
      }
    }
  }
}

/** A read-only device over `data`. */
function device(data) {
  return {
    size: data.length,
    extentGranularity: 4096,
    mode: 'ro',
    async read(offset, length, into) {
      const out = into ? into.subarray(0, length) : Buffer.alloc(length);
      data.copy(out, 0, offset, offset + length);
      return out;
    },
    async write() {
      throw new Error('read-only');
    },
    async writeZeroes() {
      throw new Error('read-only');
    },
    async flush() {},
    async extents() {
      return [{ offset: 0, length: data.length }];
    },
    async close() {},
  };
}

const VOLUME = { id: 'vol', name: 'vol', size: 0, status: 'available', createdAt: new Date(0).toISOString(), metadata: {} };

async function backUp(service, id, data) {
  const now = new Date().toISOString();
  const b = { id, name: id, description: '', volumeId: VOLUME.id, volumeName: VOLUME.name, size: data.length, status: 'creating', service: 'repo', incremental: false, volumeMetadata: {}, serviceData: {}, createdAt: now, updatedAt: now };
  const result = await service.backup({ backup: b, volume: { ...VOLUME, size: data.length }, signal: new AbortController().signal, progress: () => undefined }, { device: device(data) });
  return { ...b, status: 'available', serviceData: result.serviceData, stats: result.stats };
}

const all = Buffer.alloc(2 * live * CHUNK);
for (let i = 0; i + 4 <= all.length; i += 4) all.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ 0x5eed) >>> 0, i);
const even = Buffer.alloc(live * CHUNK);
for (let k = 0; k < live; k++) all.copy(even, k * CHUNK, 2 * k * CHUNK, (2 * k + 1) * CHUNK);

const times = [];
for (let round = 0; round < rounds; round++) {
  const store = new LatencyStore('mem');
  const service = await ChunkedBackupService.open(store, { name: 'repo', init: { chunkSize: CHUNK, packSize: MiB, compression: 'none', kdf: { N: 1024, r: 8, p: 1 } } });
  const first = await backUp(service, 'all', all);
  await backUp(service, 'even', even);
  await service.delete(first);
  const packs = service.repository.index.packs().size;
  store.maxGets = store.maxPacks = 0;
  const t0 = performance.now();
  const report = await service.gc({ graceMs: 0 });
  const ms = performance.now() - t0;
  times.push(ms);
  console.log(`round ${round + 1}: ${live} live chunks in ${packs} packs, ${report.packsRepacked} repacked: gc ${(ms / 1000).toFixed(2)} s, at most ${store.maxGets} pack gets and ${store.maxPacks} packs in flight`);
  await service.close();
}
const sorted = [...times].sort((a, b) => a - b);
console.log(`median gc ${(sorted[Math.floor(sorted.length / 2)] / 1000).toFixed(2)} s (latency ${latencyMs} ms per get)`);
