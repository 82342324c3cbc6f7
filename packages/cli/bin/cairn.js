#!/usr/bin/env -S node --max-semi-space-size=4 --optimize-for-size
// --max-semi-space-size=4 (MiB): V8's young generation otherwise grows to 3 × 16 MiB during a long
// backup or restore, which is most of why peak RSS grew with the volume's size (measured, 8 GiB
// full backup: 206 → 182 MiB; 2 GiB: 169 → 161 MiB; no change in speed).
// --optimize-for-size: V8 grows each thread's old generation in smaller steps, so the garbage the
// workers promote over a long backup no longer adds committed pages (measured, V8 pages at the
// end of the data phase: 2 GiB 33 → 28 MiB, 8 GiB 42 → 30 MiB; no change in speed).
import '../dist/main.js';
