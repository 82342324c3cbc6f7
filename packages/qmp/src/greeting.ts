/**
 * The QMP greeting, the first message a QMP server sends on a new connection (qemu's QMP spec):
 * `{"QMP": {"version": {"qemu": {"major", "minor", "micro"}, "package"}, "capabilities": [...]}}`.
 *
 * Contract: `parseGreeting` accepts exactly that shape (version numbers non-negative integers,
 * `package` a string, `capabilities` an array of strings; other members are ignored) and returns
 * a copy of it, or undefined for anything else; the caller then refuses the peer as not a QMP
 * server. No minimum qemu version is imposed here: nothing in Cairn checks one. Never throws.
 */
import type { QemuVersionInfo } from './block-types.js';

/** The greeting qemu sends on connect. */
export interface QmpGreeting {
  version: QemuVersionInfo;
  /** Capabilities offered (qemu 7.2: `oob`); this client enables none. */
  capabilities: string[];
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isVersionNumber = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** The greeting in `message` when it has the shape above; undefined otherwise. */
export function parseGreeting(message: unknown): QmpGreeting | undefined {
  const qmp = isRecord(message) ? message.QMP : undefined;
  if (!isRecord(qmp) || !isRecord(qmp.version) || !Array.isArray(qmp.capabilities)) return undefined;
  const { qemu, package: pkg } = qmp.version;
  if (!isRecord(qemu) || typeof pkg !== 'string') return undefined;
  const { major, minor, micro } = qemu;
  if (!isVersionNumber(major) || !isVersionNumber(minor) || !isVersionNumber(micro)) return undefined;
  const capabilities = qmp.capabilities as unknown[];
  if (!capabilities.every((c) => typeof c === 'string')) return undefined;
  return { version: { qemu: { major, minor, micro }, package: pkg }, capabilities: [...(capabilities as string[])] };
}
