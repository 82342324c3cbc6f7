import { spawn } from 'node:child_process';
import { open } from 'node:fs/promises';
import { CairnError } from '@cairn/core';

/** Disk image formats `volume import`/`volume export` understand. */
export const IMAGE_FORMATS = ['raw', 'qcow2', 'vmdk'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

/** Validates a `--format` value. `INVALID_INPUT` for an unknown one. */
export function parseFormat(text: string): ImageFormat | 'auto' {
  if (text === 'auto' || (IMAGE_FORMATS as readonly string[]).includes(text)) return text as ImageFormat | 'auto';
  throw new CairnError('INVALID_INPUT', `unknown image format ${text} (expected auto, ${IMAGE_FORMATS.join(', ')})`);
}

/** The format of an existing image from its magic bytes: `QFI\xfb` qcow2, `KDMV` or a descriptor VMDK, else raw. */
export async function detectFormat(file: string): Promise<ImageFormat> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await fh.read(head, 0, 512, 0);
    const b = head.subarray(0, bytesRead);
    if (b.subarray(0, 4).equals(Buffer.from([0x51, 0x46, 0x49, 0xfb]))) return 'qcow2';
    if (b.subarray(0, 4).toString('latin1') === 'KDMV') return 'vmdk';
    if (b.toString('latin1').startsWith('# Disk DescriptorFile')) return 'vmdk';
    return 'raw';
  } finally {
    await fh.close();
  }
}

/** The format an output file name implies: `.qcow2` → qcow2, `.vmdk` → vmdk, else raw. */
export function formatFromName(file: string): ImageFormat {
  if (/\.qcow2?$/i.test(file)) return 'qcow2';
  if (/\.vmdk$/i.test(file)) return 'vmdk';
  return 'raw';
}

/**
 * Converts an image with `qemu-img convert` (sparse output). `NOT_SUPPORTED` when qemu-img is
 * not installed; `INVALID_INPUT` when it refuses the input (with its message).
 */
export async function qemuConvert(input: string, inputFormat: ImageFormat, output: string, outputFormat: ImageFormat): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn('qemu-img', ['convert', '-f', inputFormat, '-O', outputFormat, input, output], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err) => {
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      reject(new CairnError(missing ? 'NOT_SUPPORTED' : 'INTERNAL', missing ? `${inputFormat === 'raw' ? outputFormat : inputFormat} images need qemu-img, which is not installed` : `qemu-img failed: ${err.message}`, { driver: 'qemu-img', cause: err }));
    });
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new CairnError('INVALID_INPUT', `qemu-img convert ${input} failed: ${stderr.trim() || `exit ${code}`}`, { driver: 'qemu-img' }));
    });
  });
}
