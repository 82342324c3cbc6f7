// Fixture of the backup-export tests: a posix repository (encrypted or not) holding one backup of
// a memory volume with data, text, zero runs and an unaligned tail, plus the source bytes on disk.
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { BackupManager, ChunkedBackupService, MemoryVolumeDriver, RepositoryCatalog, type BackupRecord, type Repository } from '@cairn/core';

export const MiB = 1024 * 1024;
export const KiB = 1024;
/** Chunk size of the fixture's repositories. */
export const CHUNK = 128 * KiB;

export interface BackupFixture {
  dir: string;
  repoDir: string;
  store: PosixObjectStore;
  service: ChunkedBackupService;
  manager: BackupManager;
  volumes: MemoryVolumeDriver;
  backup: BackupRecord;
  /** The volume's bytes when backed up. */
  source: Buffer;
  /** The same bytes in a file. */
  sourcePath: string;
  /** Ranges of whole zero chunks (what `base:allocation` must call holes). */
  holes: { offset: number; length: number }[];
}

/**
 * Layout of `size` bytes in 1 MiB slots: random, zeros, text, zeros, random…, plus a 100-byte
 * non-zero run at the end of the last zero slot so one chunk is mostly zeros but data.
 */
function content(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let slot = 0; slot * MiB < size; slot++) {
    const at = slot * MiB;
    const len = Math.min(MiB, size - at);
    switch (slot % 4) {
      case 0:
        randomBytes(len).copy(b, at);
        break;
      case 2:
        b.write(`slot ${slot} text line\n`.repeat(Math.ceil(len / 20)).slice(0, len), at);
        break;
      default:
        break; // zeros
    }
  }
  b.write('tail-marker'.repeat(9), size - 200);
  return b;
}

export async function backupFixture(dir: string, options: { size?: number; passphrase?: string } = {}): Promise<BackupFixture> {
  const size = options.size ?? 16 * MiB;
  const repoDir = join(dir, 'repo');
  const store = await PosixObjectStore.open({ directory: repoDir, createDirectory: true });
  const service = await ChunkedBackupService.open(store, {
    name: 'repo',
    workers: 0,
    passphrase: options.passphrase,
    init: { chunkSize: CHUNK, packSize: 2 * MiB, kdf: { N: 1024, r: 8, p: 1 } },
  });
  const volumes = new MemoryVolumeDriver();
  const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
  const source = content(size);
  const v = await volumes.createVolume({ size, name: 'served' });
  const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
  await a.device.write(0, source);
  await volumes.detach(a.id);
  const backup = await manager.backup({ volumeId: v.id, name: 'full' });
  const sourcePath = join(dir, 'source.raw');
  await writeFile(sourcePath, source);
  const holes: { offset: number; length: number }[] = [];
  for (let at = 0; at < size; at += CHUNK) {
    if (!source.subarray(at, Math.min(size, at + CHUNK)).every((x) => x === 0)) continue;
    const prev = holes[holes.length - 1];
    if (prev && prev.offset + prev.length === at) prev.length += Math.min(CHUNK, size - at);
    else holes.push({ offset: at, length: Math.min(CHUNK, size - at) });
  }
  return { dir, repoDir, store, service, manager, volumes, backup, source, sourcePath, holes };
}

/** Every file under `dir` with its SHA-256, sorted: to prove a directory was not touched. */
export async function treeDigest(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(`${relative(dir, p)} ${createHash('sha256').update(await readFile(p)).digest('hex')}`);
    }
  };
  await walk(dir);
  return out.sort();
}

/** Flips one byte in the middle of chunk `index` of the backup, in its pack file. */
export async function corruptChunk(f: BackupFixture, index: number): Promise<void> {
  const repo = f.service.repository;
  const manifest = await repo.readManifest(f.backup.id);
  await repo.index.refresh();
  const id = await manifest.chunks.get(index);
  if (!id) throw new Error(`chunk ${index} is a zero chunk`);
  const loc = repo.index.get(id)!;
  const key = `packs/${loc.pack}`;
  const pack = await f.store.get(key);
  pack[loc.offset + Math.floor(loc.length / 2)]! ^= 0x40;
  await f.store.put(key, pack);
}

/** A view of a repository whose pack reads wait at a gate while it is shut. */
export interface GatedRepository {
  repository: Repository;
  /** Pack reads from now on wait until `open()`. */
  shut(): void;
  /** Lets every waiting and later pack read through. */
  open(): void;
  /** Resolves once a pack read waits at the gate shut last. */
  entered(): Promise<void>;
}

/** `repo` with gated pack reads (`get` and `getInto` of `packs/…`): a store that hangs until released. Shut at first unless `shut` is false. */
export function gatedRepository(repo: Repository, shut = true): GatedRepository {
  let gate: Promise<void> | undefined;
  let release = (): void => undefined;
  let waited = false;
  let waiters: Array<() => void> = [];
  const atGate = async (key: string): Promise<void> => {
    const current = gate;
    if (!key.startsWith('packs/') || !current) return;
    waited = true;
    for (const w of waiters.splice(0)) w();
    await current;
  };
  const store = Object.create(repo.store, {
    get: {
      value: async (key: string, range?: { offset: number; length: number }) => {
        await atGate(key);
        return repo.store.get(key, range);
      },
    },
    getInto: {
      value: async (key: string, range: { offset: number; length: number }, into: Buffer) => {
        await atGate(key);
        return repo.store.getInto!(key, range, into);
      },
    },
  });
  const g: GatedRepository = {
    repository: Object.create(repo, { store: { value: store } }) as Repository,
    shut() {
      if (gate) return;
      waited = false;
      gate = new Promise<void>((r) => (release = r));
    },
    open() {
      gate = undefined;
      release();
    },
    entered() {
      return waited ? Promise.resolve() : new Promise<void>((r) => waiters.push(r));
    },
  };
  if (shut) g.shut();
  return g;
}
