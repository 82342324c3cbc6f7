import { createHash, timingSafeEqual } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { CairnError, isCairnError, type DriverRegistry } from '@cairn/core';
import type { FastifyRequest } from 'fastify';
import { HttpError } from './errors.js';

/** Shortest token accepted: a guessable token is no protection. */
export const MIN_TOKEN_LENGTH = 16;

/** A `--listen` address. */
export interface ListenAddress {
  host: string;
  port: number;
}

/** `127.0.0.1:8470`, `[::1]:0`, `localhost:8470` → {host, port}. `INVALID_INPUT` for anything else. */
export function parseListen(text: string): ListenAddress {
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new CairnError('INVALID_INPUT', `--listen takes host:port (e.g. 127.0.0.1:8470, [::1]:8470; port 0 picks a free port), not ${JSON.stringify(text)}`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}

/** True for addresses only this host can reach: 127.0.0.0/8, ::1 (also IPv4-mapped) and `localhost`. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./.test(h) || /^(0{1,4}:){7}0{0,3}1$/.test(h);
  return false;
}

/**
 * Reads the bearer token from `file` through the registry's secret reader (`file:` references:
 * one trailing newline dropped), keeping its code with details.file: `NOT_FOUND` when missing,
 * `UNAVAILABLE` when this process may not read it, `INVALID_INPUT` when it is a directory.
 * `INVALID_INPUT` for a token shorter than MIN_TOKEN_LENGTH or holding anything but visible
 * ASCII (0x21–0x7E: whitespace, control characters and non-ASCII are refused). Returns a
 * warning when the file is readable by group or others. The token itself never appears in a message.
 */
export async function loadToken(registry: DriverRegistry, file: string): Promise<{ token: string; warning?: string }> {
  const path = resolve(file);
  const token = await registry.secret(`file:${path}`).catch((cause: unknown) => Promise.reject(tokenFileError(path, cause)));
  // Visible ASCII only: a header value crosses HTTP as bytes, which Node reads as latin1, so a
  // token with other characters (UTF-8 `€`, a control character) could never be matched by any
  // request, and the server would refuse everyone.
  if (token.length < MIN_TOKEN_LENGTH || !/^[\x21-\x7e]+$/.test(token)) {
    throw new CairnError('INVALID_INPUT', `the token in ${path} must be at least ${MIN_TOKEN_LENGTH} visible ASCII characters, without whitespace (e.g. the output of: openssl rand -hex 32)`);
  }
  const mode = (await stat(path)).mode & 0o077;
  return { token, warning: mode ? `token file ${path} is readable by group or others (chmod 600 it)` : undefined };
}

/** The secret reader's failure to read the token file `path`, its code kept (NOT_FOUND for anything else), said of the token file. */
function tokenFileError(path: string, cause: unknown): CairnError {
  const code = isCairnError(cause) ? cause.code : 'NOT_FOUND';
  const errno = ((cause as { cause?: NodeJS.ErrnoException } | undefined)?.cause as NodeJS.ErrnoException | undefined)?.code;
  const why = code === 'UNAVAILABLE' ? `: permission denied (${errno ?? code})` : code === 'INVALID_INPUT' ? ': it is a directory' : errno === 'ENOENT' ? ': it does not exist' : '';
  return new CairnError(code, `token file ${path} cannot be read${why}`, { cause, details: { file: path } });
}

/**
 * Refuses (`INVALID_INPUT`) to serve a non-loopback address without a token: the API backs up,
 * restores over and deletes volumes, so anyone who reaches it must prove who they are.
 */
export function assertListenAllowed(address: ListenAddress, hasToken: boolean): void {
  if (!hasToken && !isLoopback(address.host)) {
    throw new CairnError('INVALID_INPUT', `listening on ${address.host}, which is not a loopback address, needs --token-file (every request must then carry Authorization: Bearer <token>)`);
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * A check that lets a request through only with exactly one `Authorization: Bearer <token>`
 * header; otherwise it throws `UNAUTHENTICATED` (401, with `WWW-Authenticate`). Several
 * Authorization headers are refused, whatever they hold: Node keeps only the first of them in
 * `headers`, so a request carrying a wrong credential beside the right one would otherwise pass,
 * and a proxy in front may read another one than the server does. Compares digests in constant
 * time so neither the token's bytes nor its length leak through timing. Synchronous, so it can
 * also guard the answers fastify gives before routing (see server.ts, frameworkErrors).
 */
export function bearerCheck(token: string): (request: FastifyRequest) => void {
  const expected = digest(token);
  const challenge = { 'www-authenticate': 'Bearer realm="cairn"' };
  const invalid = { 'www-authenticate': 'Bearer realm="cairn", error="invalid_token"' };
  return (request) => {
    const header = request.headers.authorization;
    if (header === undefined) throw new HttpError('UNAUTHENTICATED', 'this server needs Authorization: Bearer <token>', challenge);
    const raw = request.raw.rawHeaders;
    let count = 0;
    for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === 'authorization') count++;
    if (count > 1) throw new HttpError('UNAUTHENTICATED', 'the request carries several Authorization headers: send exactly one', invalid);
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m || !timingSafeEqual(digest(m[1]!), expected)) throw new HttpError('UNAUTHENTICATED', 'the bearer token is wrong or malformed', invalid);
  };
}

/**
 * The host name of a Host header value (`name:port`, `[v6]:port`, `name`), lowercase, without the
 * trailing dot of a fully qualified name (`localhost.` is `localhost`, as DNS and browsers take it).
 */
function hostName(header: string): string {
  const bracketed = /^\[([^\]]*)\](?::\d*)?$/.exec(header);
  return (bracketed ? bracketed[1]! : header.replace(/:\d*$/, '').replace(/\.$/, '')).toLowerCase();
}

/**
 * The check a server without a token applies instead of bearerCheck: it trusts whoever reaches
 * its loopback address, which a web page the user opens can reach too, so it refuses what only a
 * browser sends, throwing `UNAUTHENTICATED` (401): a `Host` that is not a loopback name or
 * address (isLoopback; DNS rebinding: the page's own name resolved to 127.0.0.1, which would let
 * it read the answers and send any request), an `Origin` header (browsers send it on every
 * cross-origin request and every POST or DELETE; a POST without a body needs no preflight) and a
 * `Sec-Fetch-Site` other than `none`. curl, scripts and Node's fetch send none of these. A
 * request without a Host header (HTTP/1.0) is not a browser's and passes. Synchronous, like
 * bearerCheck.
 */
export function localClientCheck(): (request: FastifyRequest) => void {
  const challenge = { 'www-authenticate': 'Bearer realm="cairn"' };
  return (request) => {
    const { host, origin } = request.headers;
    const site = request.headers['sec-fetch-site'];
    if (host !== undefined && !isLoopback(hostName(host))) {
      throw new HttpError('UNAUTHENTICATED', 'this server has no token and answers only requests addressed to a loopback host (Host: 127.0.0.1, [::1] or localhost)', challenge);
    }
    if (origin !== undefined || (site !== undefined && site !== 'none')) {
      throw new HttpError('UNAUTHENTICATED', 'this server has no token and refuses requests a web page makes (Origin or Sec-Fetch-Site headers): give it --token-file to serve browsers', challenge);
    }
  };
}
