#!/usr/bin/env -S MALLOC_MMAP_THRESHOLD_=131072 node --max-semi-space-size=4 --optimize-for-size
// --max-semi-space-size=4 (MiB): V8's young generation otherwise grows to 3 × 16 MiB during a long
// backup or restore, which is most of why peak RSS grew with the volume's size (measured, 8 GiB
// full backup: 206 → 182 MiB; 2 GiB: 169 → 161 MiB; no change in speed).
// --optimize-for-size: V8 grows each thread's old generation in smaller steps, so the garbage the
// workers promote over a long backup no longer adds committed pages (measured, V8 pages at the
// end of the data phase: 2 GiB 33 → 28 MiB, 8 GiB 42 → 30 MiB; no change in speed).
// MALLOC_MMAP_THRESHOLD_=131072 (glibc): allocations of 128 KiB and more get their own mapping,
// returned when freed. Left alone, glibc raises the threshold to the largest block freed so far,
// after which such blocks come from malloc arenas that fragment over a long run (measured, peak
// RSS of an 8 GiB restore: 139–141 → 121–125 MiB, 2 GiB 116–120 → 109–115; full backups 8 GiB
// 175–179 → 170–174; the full backup spends up to 0.3 s more in the kernel). Other C libraries
// ignore it; programs embedding Cairn can set it the same way.
import '../dist/main.js';
