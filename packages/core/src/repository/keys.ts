import { createCipheriv, createDecipheriv, randomBytes, scrypt as scryptCb } from 'node:crypto';
import { promisify } from 'node:util';
import { CairnError } from '../errors.js';
import type { EncryptionParams } from './format.js';

const scrypt = promisify(scryptCb) as (password: string | Buffer, salt: Buffer, keylen: number, options: object) => Promise<Buffer>;

/** Key material of an encrypted repository. Held in memory only; never written in clear or logged. */
export interface RepositoryKeys {
  /** AES-256-GCM key for blobs and manifests. */
  dataKey: Buffer;
  /** HMAC-SHA-256 key for chunk ids. */
  idKey: Buffer;
}

/**
 * scrypt cost for new repositories: N=2^15, r=8, p=1 — 32 MiB of memory and ~70 ms here, the
 * bound restic's calibration also keeps to (≤ 60 MiB). Measured: N=2^17 (128 MiB, ~275 ms) raised
 * every encrypted command's peak RSS by ~100 MiB. A repository keeps its own parameters in
 * `config`, so this default never changes how an existing repository opens.
 */
export const DEFAULT_KDF = { N: 1 << 15, r: 8, p: 1 };

async function kek(passphrase: string, params: Pick<EncryptionParams, 'N' | 'r' | 'p' | 'salt'>): Promise<Buffer> {
  return scrypt(passphrase, Buffer.from(params.salt, 'base64'), 32, {
    N: params.N,
    r: params.r,
    p: params.p,
    maxmem: 256 * params.N * params.r + 1024 * 1024,
  });
}

/** Bytes of a config's `sealedKey`: nonce (12) | the 64-byte master key, encrypted (64) | tag (16). */
export const SEALED_KEY_BYTES = 12 + 64 + 16;

/** Creates fresh keys sealed under `passphrase`. */
export async function createKeys(passphrase: string, cost = DEFAULT_KDF): Promise<{ keys: RepositoryKeys; params: EncryptionParams }> {
  if (typeof passphrase !== 'string' || passphrase.length === 0) throw new CairnError('INVALID_INPUT', 'an encrypted repository needs a non-empty passphrase');
  const master = randomBytes(64);
  const salt = randomBytes(32).toString('base64');
  const key = await kek(passphrase, { ...cost, salt });
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  const sealed = Buffer.concat([nonce, c.update(master), c.final(), c.getAuthTag()]);
  return {
    keys: { dataKey: master.subarray(0, 32), idKey: master.subarray(32) },
    params: { kdf: 'scrypt', ...cost, salt, sealedKey: sealed.toString('base64') },
  };
}

/**
 * Unseals the keys. `INVALID_INPUT` for a wrong passphrase (the seal does not authenticate);
 * `CORRUPT` for a sealed key of another length than SEALED_KEY_BYTES, which no passphrase opens
 * (Repository.open refuses such a config before deriving anything: configProblem).
 */
export async function openKeys(passphrase: string, params: EncryptionParams): Promise<RepositoryKeys> {
  if (params.kdf !== 'scrypt') throw new CairnError('NOT_SUPPORTED', `unknown key derivation ${params.kdf}`);
  const sealed = Buffer.from(params.sealedKey, 'base64');
  if (sealed.length !== SEALED_KEY_BYTES) throw new CairnError('CORRUPT', `repository config is damaged: sealedKey holds ${sealed.length} bytes, not ${SEALED_KEY_BYTES}`);
  const key = await kek(passphrase, params);
  try {
    const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    const master = Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]);
    return { dataKey: master.subarray(0, 32), idKey: master.subarray(32) };
  } catch (cause) {
    throw new CairnError('INVALID_INPUT', 'wrong passphrase or key file for this repository', { cause });
  }
}
