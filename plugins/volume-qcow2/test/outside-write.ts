import { open } from 'node:fs/promises';
import { qemuImg } from './helpers.js';

/** The host offset in the image file of the data cluster holding guest offset `at` (qemu-img map). */
export function hostOffset(path: string, at: number): number {
  const map = JSON.parse(qemuImg(['map', '-U', '--output=json', '-f', 'qcow2', path]).stdout) as Array<{ start: number; length: number; data: boolean; offset?: number }>;
  const e = map.find((m) => m.data && m.start <= at && at < m.start + m.length && m.offset !== undefined);
  if (!e) throw new Error(`no data cluster at ${at}`);
  return e.offset! + (at - e.start);
}

/** Overwrites guest offset `at` of the qcow2 image at `path` in place, by a plain write to the file (no bitmap marks it). */
export async function writeInPlace(path: string, at: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, hostOffset(path, at));
  } finally {
    await fh.close();
  }
}
