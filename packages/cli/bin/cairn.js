#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=4 --optimize-for-size
// --max-semi-space-size=4 (MiB): V8's young generation otherwise grows to 3 × 16 MiB during a long
// backup or restore, which is most of why peak RSS grew with the volume's size (measured, 8 GiB
// full backup: 206 → 182 MiB; 2 GiB: 169 → 161 MiB; no change in speed).
// --optimize-for-size: V8 grows each thread's old generation in smaller steps, so the garbage the
// workers promote over a long backup no longer adds committed pages (measured, V8 pages at the
// end of the data phase: 2 GiB 33 → 28 MiB, 8 GiB 42 → 30 MiB; no change in speed).
// MALLOC_ARENA_MAX=2 (glibc): two malloc arenas for all threads instead of one per thread
// (main, two workers, libuv's pool), so the slack each arena keeps is not multiplied by the
// threads. It replaced MALLOC_MMAP_THRESHOLD_=131072, which held peak RSS as low but made glibc
// trim its heaps at every free above 128 KiB: the node:crypto outputs freed by each GC were given
// back and faulted in again, 50,000–180,000 page faults more per 2 GiB restore or backup. On a VM
// where a page fault costs 13.6 µs (measured here) that was 1–2 s of a 2 GiB full backup
// (5.0–5.9 → 3.6–4.2 s) and 0.5–0.8 s of its restore. See docs/performance.md. Other C
// libraries ignore it; programs embedding Cairn can set it the same way.
// The program runs from its bundle (scripts/bundle.mjs, made by `npm run build`): one module
// instead of about 800 halves the start of every command. Without it, say so rather than run
// code that may not match the build; with a bundle older than a build of the packages it was
// made from (tsc -b since, as `<bundle>.stamp.json` tells), run it but say so.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const bundleUrl = new URL('../bundle/cairn.js', import.meta.url);
const bundle = fileURLToPath(bundleUrl);
if (existsSync(bundle)) {
  warnIfStale(bundle);
  await import(bundleUrl.href);
} else {
  process.stderr.write(`error [INTERNAL]: the cairn program is not built (${bundle} is missing): run \`npm run build\`\n`);
  process.exitCode = 1;
}

/** A warning on stderr when a build the bundle was made from changed since (never throws). */
function warnIfStale(file) {
  try {
    const { builds } = JSON.parse(readFileSync(file.replace(/\.js$/, '.stamp.json'), 'utf8'));
    const changed = builds.filter((b) => {
      try {
        return statSync(join(dirname(file), b.file)).mtimeMs !== b.mtimeMs;
      } catch {
        return false; // an installed package ships no build info
      }
    });
    if (changed.length > 0) {
      process.stderr.write(`warning: the cairn bundle is older than the build of ${changed.map((b) => join(dirname(file), b.file)).join(', ')}: run \`npm run build\`\n`);
    }
  } catch {
    // No stamp (a bundle made otherwise): nothing to compare.
  }
}
