import { newId, nowIso, type BackupRecord, type BackupResult, type Volume } from '@cairn/core';
import { patternBytes } from '../harness.js';
import type { BackupServiceContext } from './context.js';

/** A record in `creating`, as the BackupManager would hand it to a service. */
export function newRecord(ctx: BackupServiceContext, volume: Volume, parent?: BackupRecord): BackupRecord {
  const now = nowIso();
  return {
    id: newId(),
    name: '',
    description: '',
    volumeId: volume.id,
    volumeName: volume.name,
    size: volume.size,
    status: 'creating',
    service: ctx.service.name,
    parentId: parent?.id,
    incremental: !!parent,
    volumeMetadata: { ...volume.metadata },
    serviceData: {},
    createdAt: now,
    updatedAt: now,
  };
}

export interface TakeOptions {
  parent?: BackupRecord;
  /** Checkpoint to offer as `changedSince`. */
  changedSince?: string;
  signal?: AbortSignal;
  vmConfig?: Uint8Array;
}

/** Backs a volume up through the service directly (what the manager does), returning the available record. */
export async function takeBackup(ctx: BackupServiceContext, volume: Volume, options: TakeOptions = {}): Promise<BackupRecord> {
  const record = newRecord(ctx, volume, options.parent);
  const a = await ctx.volumes.attach({ kind: 'volume', id: volume.id }, 'ro');
  let result: BackupResult;
  try {
    result = await ctx.service.backup(
      {
        backup: record,
        parent: options.parent,
        volume,
        vmConfig: options.vmConfig,
        signal: options.signal ?? new AbortController().signal,
        progress: () => {},
      },
      { device: a.device, changedSince: options.changedSince },
    );
  } finally {
    await ctx.volumes.detach(a.id);
  }
  return { ...record, status: 'available', serviceData: result.serviceData, stats: result.stats };
}

/** Restores into a fresh volume of the backup's size and returns its bytes. */
export async function restoreBytes(ctx: BackupServiceContext, backup: BackupRecord, size = backup.size): Promise<Buffer> {
  const v = await ctx.volumes.createVolume({ size });
  const a = await ctx.volumes.attach({ kind: 'volume', id: v.id }, 'rw');
  try {
    await ctx.service.restore(backup, a.device, { targetIsZeroed: true });
    await a.device.flush();
    return await a.device.read(0, size);
  } finally {
    await ctx.volumes.detach(a.id);
  }
}

/** Writes to a volume through a short rw attachment. */
export async function writeVolume(ctx: BackupServiceContext, volume: Volume, writes: { offset: number; data: Uint8Array | null; length?: number }[]): Promise<void> {
  const a = await ctx.volumes.attach({ kind: 'volume', id: volume.id }, 'rw');
  try {
    for (const w of writes) {
      if (w.data) await a.device.write(w.offset, w.data);
      else await a.device.writeZeroes(w.offset, w.length ?? 0);
    }
    await a.device.flush();
  } finally {
    await ctx.volumes.detach(a.id);
  }
}

/** Reads a whole volume. */
export async function readVolume(ctx: BackupServiceContext, volume: Volume): Promise<Buffer> {
  const a = await ctx.volumes.attach({ kind: 'volume', id: volume.id }, 'ro');
  try {
    return await a.device.read(0, a.device.size);
  } finally {
    await ctx.volumes.detach(a.id);
  }
}

/** Fills a volume with a realistic mix: random, text-like and zero runs. */
export async function fillRealistic(ctx: BackupServiceContext, volume: Volume, seed: number): Promise<void> {
  const run = 256 * 1024;
  const writes: { offset: number; data: Uint8Array }[] = [];
  for (let offset = 0, i = 0; offset < volume.size; offset += run, i++) {
    const length = Math.min(run, volume.size - offset);
    const kind = (i * 7 + seed) % 3;
    if (kind === 0) writes.push({ offset, data: patternBytes(length, seed * 1000 + i) });
    else if (kind === 1) writes.push({ offset, data: Buffer.from('the quick brown fox jumps over the lazy dog\n'.repeat(Math.ceil(length / 44)).slice(0, length)) });
  }
  await writeVolume(ctx, volume, writes);
}
