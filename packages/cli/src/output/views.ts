import type { BackupRecord, Snapshot, VerifyReport, VolumeCapabilities, VolumeView } from '@cairn/core';
import { renderFields, renderTable, type Column } from './table.js';
import { shownText } from './terminal-text.js';
import { formatBytes, formatDuration } from './units.js';

/**
 * JSON shape of a volume (docs/cli.md "Volume"). `capabilities` (Volume.capabilities: what this
 * volume lacks of its driver's, `{changedBlockTracking: false}`) only when the volume lacks any.
 */
export function volumeJson(v: VolumeView) {
  return { id: v.id, name: v.name, size: v.size, status: v.status, previousStatus: v.previousStatus, createdAt: v.createdAt, metadata: v.metadata, ...(v.capabilities ? { capabilities: v.capabilities } : {}) };
}

/** Human text of what a volume lacks of its driver's capabilities; undefined when nothing. */
export function lackedCapabilitiesText(c: VolumeCapabilities | undefined): string | undefined {
  return c?.changedBlockTracking === false ? 'no changed-block tracking (every backup reads the whole volume)' : undefined;
}

export const volumeColumns: Column<VolumeView>[] = [
  { header: 'ID', value: (v) => v.id },
  { header: 'NAME', value: (v) => v.name },
  { header: 'SIZE', value: (v) => formatBytes(v.size), right: true },
  { header: 'STATUS', value: (v) => v.status },
  { header: 'CREATED', value: (v) => v.createdAt },
  // What the volume lacks of its driver's capabilities, `-` when nothing (lackedCapabilitiesText, short).
  { header: 'NOTES', value: (v) => (v.capabilities?.changedBlockTracking === false ? 'no changed-block tracking' : undefined) },
];

export function volumeText(v: VolumeView, snapshots?: Snapshot[]): string {
  const lacks = lackedCapabilitiesText(v.capabilities);
  const lines = renderFields([
    ['id', v.id],
    ['name', v.name],
    ['size', `${formatBytes(v.size)} (${v.size} bytes)`],
    ['status', v.previousStatus ? `${v.status} (was ${v.previousStatus})` : v.status],
    ['created', v.createdAt],
    ['metadata', Object.entries(v.metadata).map(([k, x]) => `${k}=${x}`).join(', ')],
    // Only for a volume that lacks some of its driver's capabilities (a qcow2 version 2 image).
    ...(lacks ? [['capabilities', lacks] as [string, string]] : []),
  ]);
  if (!snapshots) return lines;
  return `${lines}\n\nsnapshots:\n${renderTable(snapshots, snapshotColumns)}`;
}

/** JSON shape of a snapshot. */
export function snapshotJson(s: Snapshot) {
  return { id: s.id, volumeId: s.volumeId, name: s.name, size: s.size, createdAt: s.createdAt };
}

export const snapshotColumns: Column<Snapshot>[] = [
  { header: 'ID', value: (s) => s.id },
  { header: 'NAME', value: (s) => s.name },
  { header: 'SIZE', value: (s) => formatBytes(s.size), right: true },
  { header: 'CREATED', value: (s) => s.createdAt },
];

/** JSON shape of a backup (docs/cli.md "Backup"): the record without the service's opaque data. */
export function backupJson(b: BackupRecord) {
  return {
    id: b.id,
    name: b.name,
    description: b.description,
    volumeId: b.volumeId,
    volumeName: b.volumeName,
    size: b.size,
    status: b.status,
    failReason: b.failReason,
    target: b.service,
    parentId: b.parentId,
    incremental: b.incremental,
    stats: b.stats,
    createdAt: b.createdAt,
    updatedAt: b.updatedAt,
  };
}

export const backupColumns: Column<BackupRecord>[] = [
  { header: 'ID', value: (b) => b.id },
  { header: 'NAME', value: (b) => b.name },
  { header: 'VOLUME', value: (b) => b.volumeName || b.volumeId },
  { header: 'TYPE', value: (b) => (b.incremental ? 'incremental' : 'full') },
  { header: 'SIZE', value: (b) => formatBytes(b.size), right: true },
  { header: 'STORED', value: (b) => formatBytes(b.stats?.bytesStored), right: true },
  { header: 'STATUS', value: (b) => b.status },
  { header: 'CREATED', value: (b) => b.createdAt },
];

export function backupText(b: BackupRecord): string {
  const s = b.stats;
  return renderFields([
    ['id', b.id],
    ['name', b.name],
    ['description', b.description],
    ['volume', `${b.volumeName} (${b.volumeId})`],
    ['size', `${formatBytes(b.size)} (${b.size} bytes)`],
    ['status', b.failReason ? `${b.status}: ${b.failReason}` : b.status],
    ['target', b.service],
    ['type', b.incremental ? (b.parentId ? `incremental of ${b.parentId}` : 'incremental (no parent claimed yet)') : 'full'],
    ['bytes read', s ? formatBytes(s.bytesRead) : undefined],
    ['bytes new', s ? formatBytes(s.bytesNew) : undefined],
    ['bytes reused', s ? formatBytes(s.bytesReused) : undefined],
    ['bytes stored', s ? formatBytes(s.bytesStored) : undefined],
    ['duration', s ? formatDuration(s.durationMs) : undefined],
    ['created', b.createdAt],
    ['updated', b.updatedAt],
  ]);
}

/** Human text of a verify report; a problem's backup id and message shown through shownText. */
export function verifyText(report: VerifyReport): string {
  return [
    `checked ${report.checked.length} backup(s), ${formatBytes(report.bytesChecked)}`,
    ...report.problems.map((p) => `problem [${p.code}] ${p.backupId === undefined ? 'repository' : `backup ${shownText(p.backupId)}`}: ${shownText(p.message)}`),
    report.problems.length === 0 ? 'no problems' : `${report.problems.length} problem(s)`,
  ].join('\n');
}
