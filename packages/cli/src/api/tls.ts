import { resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import { CairnError, readBounded, toCairnError } from '@cairn/core';

/** The most a certificate chain or key file may hold (PEM; a long chain is tens of KiB). */
const TLS_FILE_LIMIT = 1024 * 1024;

/** A certificate (chain) and its private key, PEM, as the server hands them to node:tls. */
export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
}

/**
 * Reads `--tls-cert` and `--tls-key` for `cairn serve`: both or neither (`INVALID_INPUT`). A file
 * that cannot be read has its system error's code (core's toCairnError): missing `NOT_FOUND`, no
 * permission to read it `UNAVAILABLE`, a directory or one over 1 MiB (`/dev/zero`) `INVALID_INPUT`; a pair node:tls refuses (not PEM, a key that does not
 * match the certificate, an encrypted key) is `INVALID_INPUT`, checked before the server
 * starts. The key's bytes never appear in a message.
 */
export async function loadTls(certFile: string | undefined, keyFile: string | undefined): Promise<TlsFiles | undefined> {
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined) throw new CairnError('INVALID_INPUT', '--tls-cert and --tls-key go together: give both or neither');
  const read = async (file: string, what: string) => {
    const path = resolve(file);
    try {
      return await readBounded(path, TLS_FILE_LIMIT, `TLS ${what} ${path}`);
    } catch (err) {
      const e = toCairnError(err); // ENOENT: NOT_FOUND; EACCES, EPERM: UNAVAILABLE; EISDIR: INVALID_INPUT
      throw new CairnError(e.code, `cannot read the TLS ${what} ${path}: ${e.message}`, { cause: err });
    }
  };
  const tls = { cert: await read(certFile, 'certificate'), key: await read(keyFile, 'key') };
  try {
    createSecureContext(tls);
  } catch (err) {
    // node:tls names the problem (no start line, key values mismatch…) without quoting the key.
    throw new CairnError('INVALID_INPUT', `--tls-cert ${resolve(certFile)} and --tls-key ${resolve(keyFile)} are not a usable PEM certificate and private key: ${(err as Error).message}`);
  }
  return tls;
}
