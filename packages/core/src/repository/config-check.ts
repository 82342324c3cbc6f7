import type { CompressionAlgorithm } from '../contracts/backup-service.js';
import type { EncryptionParams, RepositoryConfig } from './format.js';
import { SEALED_KEY_BYTES } from './keys.js';

/** Compressions a repository may name. */
export const COMPRESSIONS: readonly CompressionAlgorithm[] = ['zstd', 'lz4', 'gzip', 'none'];

const MiB = 1024 * 1024;
const isPowerOfTwo = (n: number): boolean => (n & (n - 1)) === 0;

/** Why `n` cannot be a repository's chunk size (a power of two from 64 KiB to 16 MiB), or undefined. */
export function chunkSizeProblem(n: unknown): string | undefined {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 64 * 1024 && n <= 16 * MiB && isPowerOfTwo(n) ? undefined : `chunkSize must be a power of two from 64 KiB to 16 MiB, got ${String(n)}`;
}

/** Why `n` cannot be a repository's pack size (1 MiB to 256 MiB), or undefined. */
export function packSizeProblem(n: unknown): string | undefined {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= MiB && n <= 256 * MiB ? undefined : `packSize must be from 1 MiB to 256 MiB, got ${String(n)}`;
}

/** Why `c` is not a compression a repository may name, or undefined. */
export function compressionProblem(c: unknown): string | undefined {
  return COMPRESSIONS.includes(c as CompressionAlgorithm) ? undefined : `compression must be one of ${COMPRESSIONS.join(', ')}, got ${String(c)}`;
}

/**
 * Why scrypt parameters are unusable, or undefined: N a power of two from 2 to 2^24 and below
 * 2^(16·r) (scrypt's own rule: node:crypto throws a RangeError otherwise, so r=1 allows N up to
 * 2^15), r from 1 to 32, p from 1 to 16, at most 1 GiB of memory (128·N·r bytes). A config names
 * them, so they are bounded before any key derivation sizes memory from them.
 */
export function kdfProblem(k: Partial<Pick<EncryptionParams, 'N' | 'r' | 'p'>>): string | undefined {
  const { N, r, p } = k;
  const int = (v: unknown, lo: number, hi: number): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= lo && v <= hi;
  if (!int(N, 2, 1 << 24) || !isPowerOfTwo(N)) return `scrypt N must be a power of two from 2 to 2^24, got ${String(N)}`;
  if (!int(r, 1, 32) || !int(p, 1, 16)) return `scrypt r must be from 1 to 32 and p from 1 to 16, got r=${String(r)} p=${String(p)}`;
  if (N >= 2 ** (16 * r)) return `scrypt N must be below 2^${16 * r} when r=${r}, got N=${N}`;
  if (128 * N * r > 1024 * MiB) return `scrypt N=${N}, r=${r} needs more than 1 GiB`;
  return undefined;
}

/**
 * Why `v` cannot be a config's format version (a positive integer), or undefined. Checked before
 * the version is compared with the reader's: a config without one must not pass for a current
 * one (every comparison with undefined is false, so an upgrade would skip its steps).
 */
export function versionProblem(v: unknown): string | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 1 ? undefined : `version must be a positive integer, got ${JSON.stringify(v) ?? 'none'}`;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Why a config's `sealedKey` cannot be one (base64 of SEALED_KEY_BYTES bytes), or undefined: no passphrase opens it, so it is damage, not a wrong passphrase. */
function sealedKeyProblem(k: unknown): string | undefined {
  if (typeof k !== 'string' || !BASE64.test(k)) return 'sealedKey is not base64';
  const n = Buffer.from(k, 'base64').length;
  return n === SEALED_KEY_BYTES ? undefined : `sealedKey holds ${n} bytes, not ${SEALED_KEY_BYTES}`;
}

/**
 * Why a stored `config` cannot be trusted, or undefined: a field every Cairn writes is missing
 * or out of bounds (docs/repository-format.md, `config`). Its format and version are checked
 * apart, first (versionProblem; a newer version is NOT_SUPPORTED before its fields are judged).
 */
export function configProblem(c: RepositoryConfig): string | undefined {
  const enc = c.encryption;
  const encryption =
    enc === null
      ? undefined
      : typeof enc !== 'object' || enc.kdf !== 'scrypt' || typeof enc.salt !== 'string' || typeof enc.sealedKey !== 'string'
        ? 'encryption parameters are malformed'
        : (kdfProblem(enc) ?? sealedKeyProblem(enc.sealedKey));
  return (
    chunkSizeProblem(c.chunkSize) ??
    packSizeProblem(c.packSize) ??
    compressionProblem(c.compression) ??
    (typeof c.id === 'string' ? undefined : 'no repository id') ??
    (typeof c.createdAt === 'string' ? undefined : 'no creation time') ??
    encryption
  );
}
