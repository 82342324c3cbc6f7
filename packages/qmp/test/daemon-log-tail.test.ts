// When the daemon's temp dir was removed, the whole daemon.log was read into one string to keep
// its last 1 MiB for readLog(): a log past about 512 MiB cannot be one string, the read failed and
// the log was lost (readLog() gave ''). Now only the last 1 MiB is read (open, fstat, read).
import { appendFile, open, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuStorageDaemon } from '../src/index.js';
import { readTail } from '../src/log-tail.js';
import { removeDir, tempDir } from './helpers.js';

const MiB = 1024 * 1024;
/** Larger than V8's longest string (2^29 - 24 UTF-16 units): read whole, this log cannot be decoded. */
const HUGE = 600 * MiB;

let parent: string;

beforeAll(async () => {
  parent = await tempDir();
});

afterAll(async () => {
  await removeDir(parent);
});

describe('the daemon log tail', () => {
  it('keeps the last 1 MiB of a daemon log grown past what one string holds', async () => {
    const daemon = await QemuStorageDaemon.start({ tmpParent: parent });
    try {
      // The daemon appends (O_APPEND): grow its log sparsely, then end it with known lines.
      await truncate(daemon.logPath, HUGE);
      await appendFile(daemon.logPath, 'second to last line\nlast line\n');
    } finally {
      await daemon.stop();
    }
    const log = await daemon.readLog();
    expect(log.endsWith('second to last line\nlast line\n')).toBe(true);
    expect(Buffer.byteLength(log)).toBe(MiB);
  });

  it('readLog() of a running daemon gives the last 1 MiB of its log, not the whole log', async () => {
    const daemon = await QemuStorageDaemon.start({ tmpParent: parent });
    try {
      // The daemon appends (O_APPEND): grow its log past 1 MiB with known bytes and last lines.
      const filler = Buffer.from(Array.from({ length: 3 * 16 * 1024 }, (_, i) => `${String(i).padStart(63, '.')}\n`).join(''));
      await appendFile(daemon.logPath, filler);
      await appendFile(daemon.logPath, 'second to last line\nlast line\n');
      const log = await daemon.readLog();
      const whole = await readFile(daemon.logPath);
      expect(whole.length).toBeGreaterThan(3 * MiB);
      expect(Buffer.byteLength(log)).toBe(MiB);
      expect(log.endsWith('second to last line\nlast line\n')).toBe(true);
      expect(log).toBe(whole.subarray(whole.length - MiB).toString('utf8'));
    } finally {
      await daemon.stop();
    }
  });

  it('reads a small file whole and a large one from its end, dropping a character cut at the start', async () => {
    const path = join(parent, 'log');
    await writeFile(path, 'short log\n');
    expect(await readTail(path, MiB)).toBe('short log\n');
    // 'é' is two bytes (c3 a9): a tail of 4 bytes starts inside it, and its second byte is dropped.
    await writeFile(path, 'xxé\nab');
    expect(await readTail(path, 4)).toBe('\nab');
    expect(await readTail(path, 5)).toBe('é\nab');
    // A sparse file far larger than the tail: only the tail is read.
    await truncate(path, HUGE);
    const fh = await open(path, 'a');
    await fh.write('the end\n');
    await fh.close();
    const tail = await readTail(path, 16);
    expect(tail).toBe(`${'\0'.repeat(8)}the end\n`);
    await expect(readTail(join(parent, 'missing'), 16)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
