// What the server holds for BLOCK_STATUS requests in flight: their replies are charged to the
// read budget by wire size (8 bytes per descriptor, reply-bound.ts), so what it really holds must
// be about that, not one object per descriptor (measured before: 210.8 MiB of heap for 32
// requests charged 32 MiB) nor the backend's answers kept past their use (96.2 MiB more). The
// child (helpers/status-heap-server.mjs) runs the built package with --expose-gc, so run
// `npx tsc -b` before this test.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from './helpers/peers.js';

const PACKAGE = fileURLToPath(new URL('..', import.meta.url));
const CHILD = join(PACKAGE, 'test/helpers/status-heap-server.mjs');
const DIST = join(PACKAGE, 'dist/index.js');
const MiB = 1024 * 1024;

let dir: { path: string; remove: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('nbd-heap-');
});
afterAll(async () => {
  await dir?.remove();
});

describe('NbdServer BLOCK_STATUS memory', () => {
  it('32 requests in flight, each with 65,536 descriptors built for one context and a second context pending, hold about their wire bytes', async () => {
    expect(existsSync(DIST), 'packages/nbd/dist is not built: run `npx tsc -b` first').toBe(true);
    const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', CHILD, pathToFileURL(DIST).href, dir.path], { timeout: 60_000 });
    const m = JSON.parse(stdout.trim()) as { waiting: number; heapUsed: number; arrayBuffers: number };
    expect(m.waiting).toBe(32); // every request was built that far at once
    // Charged to the read budget meanwhile: 32 × 2 contexts × one chunk of 65,536 descriptors (512 KiB).
    const charged = 32 * 2 * (20 + 4 + 8 * 65536);
    expect(m.heapUsed + m.arrayBuffers, JSON.stringify(m)).toBeLessThan(charged + 8 * MiB);
  });
});
