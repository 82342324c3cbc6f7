import { CairnError, isCairnError } from '@cairn/core';
import { InvalidArgumentError } from 'commander';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/**
 * Parses a size such as `64MiB`, `1G`, `4096`, `16.1KB` (bytes; `K`/`M`/`G`/`T` are binary,
 * `KB`/`MB`… decimal). The decimal is taken exactly, never through a binary float: `16.1KB` is
 * 16100 bytes. `INVALID_INPUT` for anything else, for a result that is not a whole number of
 * bytes, and for one above 2^53 − 1 (the largest size a JavaScript number holds exactly).
 */
export function parseSize(text: string): number {
  const m = /^\s*(\d+)(?:\.(\d+))?\s*([a-z]*)\s*$/i.exec(String(text));
  const unit = m ? UNITS[m[3]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new CairnError('INVALID_INPUT', `"${text}" is not a size (examples: 4096, 64MiB, 1G)`);
  const fraction = m[2] ?? '';
  const scaled = BigInt(m[1]! + fraction) * BigInt(unit);
  const divisor = 10n ** BigInt(fraction.length);
  if (scaled % divisor !== 0n) throw new CairnError('INVALID_INPUT', `"${text}" is not a whole number of bytes`);
  const bytes = scaled / divisor;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) throw new CairnError('INVALID_INPUT', `"${text}" is larger than ${Number.MAX_SAFE_INTEGER} bytes`);
  return Number(bytes);
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/**
 * `1536` → `1.5 KiB`: bytes whole, larger units with one decimal below 100 and none from 100 on,
 * judged on the rounded value (99.96 KiB is `100 KiB`), and in the next unit when rounding
 * reaches 1024 (1048575 bytes is `1.0 MiB`, not `1024 KiB`).
 */
export function formatBytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '-';
  let i = 0;
  while (i < BYTE_UNITS.length - 1 && Math.abs(n) >= 1024 ** (i + 1)) i++;
  if (i === 0) return `${n} B`;
  let text = scaled(n / 1024 ** i);
  if (i < BYTE_UNITS.length - 1 && Math.abs(Number(text)) >= 1024) text = scaled(n / 1024 ** ++i);
  return `${text} ${BYTE_UNITS[i]}`;
}

/** `v` with one decimal, or none when that rounds to 100 or more. */
function scaled(v: number): string {
  const one = v.toFixed(1);
  return Math.abs(Number(one)) >= 100 ? v.toFixed(0) : one;
}

/** `1234` → `1.23 s`; under a second in ms. */
export function formatDuration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '-';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** Parses `90s`, `10m`, `1h`, `0` (ms without a unit). `INVALID_INPUT` otherwise. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(String(text));
  if (!m) throw new CairnError('INVALID_INPUT', `"${text}" is not a duration (examples: 0, 90s, 10m, 1h)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 'ms') as 'ms'];
  return Math.round(Number(m[1]) * unit);
}

/** Parses a non-negative number of seconds (`30`, `2.5`). `INVALID_INPUT` otherwise. */
export function parseSeconds(text: string): number {
  if (!/^\s*\d+(?:\.\d+)?\s*$/.test(String(text))) throw new CairnError('INVALID_INPUT', `"${text}" is not a number of seconds (examples: 0, 30, 2.5)`);
  return Number(text);
}

/**
 * Parses a repack threshold: a share of a pack's bytes from 0 to 1 (`0.25`, `0`, `1`), or `never`
 * (Infinity: GC deletes wholly unreferenced packs and repacks none). `INVALID_INPUT` otherwise.
 */
export function parseRepackThreshold(text: string): number {
  const t = String(text).trim();
  if (t === 'never') return Infinity;
  if (!/^(?:0|1)(?:\.\d+)?$|^\.\d+$/.test(t) || Number(t) > 1) throw new CairnError('INVALID_INPUT', `"${text}" is not a repack threshold (a share from 0 to 1, e.g. 0.25, or never)`);
  return Number(t);
}

/**
 * Adapts a parser that throws CairnError (parseSize, parseDuration…) to commander, which reports
 * an InvalidArgumentError as a usage error (exit 2) naming the option.
 */
export function optionParser<T>(parse: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return parse(text);
    } catch (err) {
      throw isCairnError(err) ? new InvalidArgumentError(err.message) : err;
    }
  };
}
