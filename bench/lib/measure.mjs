/**
 * Running one measured process: `sync`, an optional dropped page cache and a pause, then the
 * command under /usr/bin/time, which gives its elapsed time and peak RSS. Shared by the
 * benchmarks.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleProgram } from '../../scripts/bundle.mjs';

/** The V8 flags and malloc setting the `cairn` binary runs with (packages/cli/bin/cairn.js). */
export const CAIRN_NODE_FLAGS = ['--max-semi-space-size=4', '--optimize-for-size'];
export const cairnEnv = (env) => ({ ...env, MALLOC_ARENA_MAX: '2' });

/**
 * The script that runs one Cairn operation (bench/cairn-op.mjs), bundled as the `cairn` binary is
 * (scripts/bundle.mjs, into bench/.bundle/), so that a measured process starts as the binary does.
 * Call once per benchmark run; needs the packages built (`npm run build`). `bundled: false`: the
 * script itself, loaded module by module (how the benchmarks ran before 2026-12-06).
 */
export async function cairnOpScript({ bundled = true } = {}) {
  const bench = join(dirname(fileURLToPath(import.meta.url)), '..');
  if (!bundled) return join(bench, 'cairn-op.mjs');
  await bundleProgram({ entry: join(bench, 'cairn-op.mjs'), outdir: join(bench, '.bundle'), name: 'cairn-op' });
  return join(bench, '.bundle', 'cairn-op.js');
}

/**
 * What comes before an operation: `sync`, so that none starts with writeback pending from the
 * one before (either tool's); and before a measured one, the page cache dropped (`cold`, root
 * only) and `settle` seconds of quiet.
 */
export function beforeOperation({ measured = false, cold = false, settle = 0 } = {}) {
  execFileSync('sync');
  if (measured) {
    if (cold) writeFileSync('/proc/sys/vm/drop_caches', '3');
    if (settle > 0) execFileSync('sleep', [String(settle)]);
  }
}

/**
 * Runs `cmd args` in `cwd` with `env`, after beforeOperation. Returns seconds, peak RSS in MiB
 * and the last JSON line of its output. Throws when it fails.
 */
export function timed(cmd, args, { cwd, env, measured = false, cold = false, settle = 0 }) {
  beforeOperation({ measured, cold, settle });
  const r = spawnSync('/usr/bin/time', ['-f', 'TIME %e %M', cmd, ...args], { cwd, env, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  const m = /TIME ([\d.]+) (\d+)/.exec(r.stderr);
  if (!m) throw new Error(`${cmd} ${args.join(' ')}: no time or peak RSS from /usr/bin/time: ${r.stderr}`);
  const json = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).at(-1);
  return { seconds: Number(m[1]), rssMiB: Math.round(Number(m[2]) / 1024), out: json ? JSON.parse(json) : undefined };
}

/** "2G", "512M", "1T" or a byte count, in bytes. */
export const parseSize = (s) => {
  const unit = { T: 2 ** 40, G: 2 ** 30, M: 2 ** 20, K: 2 ** 10 }[s.at(-1).toUpperCase()];
  return unit ? Number(s.slice(0, -1)) * unit : Number(s);
};
