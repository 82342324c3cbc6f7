/**
 * `volume import` / `volume export` of qcow2 and VMDK through qemu-img, on bad input and bad
 * conditions. Every case ends in a CairnError with a stable code and exit code, and leaves no
 * temporary file (each run gets a TMPDIR of its own, checked empty) and no half-made volume.
 * Images may name other files (a backing file, a qcow2 external data file, VMDK extents, a VMDK
 * parent): Cairn never reads a file the user did not name.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, mkdir, open, readdir, readFile, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnSpawn, jsonError, MiB, removeDir, tempDir, writeRawImage, type CliResult } from './helpers.js';

const isRoot = process.getuid?.() === 0;
const SECRET = 'TOP SECRET host file, never to be imported';

describe('volume import/export of qcow2 and VMDK: bad images and failures', () => {
  let cwd: string;
  let tmp: string;
  let secret: string;
  let data: Buffer;
  let raw: string;
  let n = 0;
  beforeAll(async () => {
    cwd = await tempDir();
    tmp = join(cwd, 'tmp');
    await mkdir(tmp);
    secret = join(cwd, 'secret.raw');
    await writeFile(secret, Buffer.concat([Buffer.from(SECRET), Buffer.alloc(MiB - SECRET.length)]));
    raw = join(cwd, 'data.raw');
    data = await writeRawImage(raw, 4 * MiB);
  });
  afterAll(() => removeDir(cwd));

  const run = (args: string[], env: Record<string, string> = {}): Promise<CliResult> => cairn([...args, '--json'], { cwd, env: { TMPDIR: tmp, ...env } });
  const qemuImg = (...args: string[]): void => void execFileSync('qemu-img', args, { cwd, stdio: 'ignore' });
  const volumeNames = async (): Promise<string[]> => (await cairnJson<{ name: string }[]>(['volume', 'list'], { cwd })).map((v) => v.name);
  /** A fresh name for a volume. */
  const fresh = (): string => `v${++n}`;
  /** A failed import: its code, exit code, no volume under `name`, nothing left in TMPDIR. */
  const expectRefused = async (r: CliResult, code: string, exit: number, name?: string) => {
    expect(r.code, r.stderr).toBe(exit);
    expect(jsonError(r).code, r.stderr).toBe(code);
    expect(r.stderr).not.toContain(SECRET);
    if (name) expect(await volumeNames()).not.toContain(name);
    expect(await readdir(tmp)).toEqual([]);
  };

  it('a qcow2 with a backing file (anywhere) is refused with INVALID_INPUT (exit 2): the backing file is never read', async () => {
    const evil = join(cwd, 'backed.qcow2');
    qemuImg('create', '-f', 'qcow2', '-b', secret, '-F', 'raw', evil, '1M');
    const name = fresh();
    const r = await run(['volume', 'import', evil, '--name', name]);
    await expectRefused(r, 'INVALID_INPUT', 2, name);
    expect(jsonError(r).message).toMatch(/backing file/);
    expect(jsonError(r).details).toMatchObject({ file: evil, reason: 'backing-file' });
  });

  it('a qcow2 with an external data file is refused with INVALID_INPUT: the data file is never read', async () => {
    const evil = join(cwd, 'datafile.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', `data_file=${join(cwd, 'df.raw')},data_file_raw=on`, evil, '1M');
    qemuImg('amend', '-f', 'qcow2', '-o', `data_file=${secret}`, evil);
    const name = fresh();
    const r = await run(['volume', 'import', evil, '--name', name]);
    await expectRefused(r, 'INVALID_INPUT', 2, name);
    expect(jsonError(r).details).toMatchObject({ reason: 'data-file' });
  });

  it('a VMDK descriptor whose extent is another path (absolute, through a directory, a symbolic link, a protocol) is refused with INVALID_INPUT', async () => {
    await symlink(secret, join(cwd, 'link-flat.vmdk'));
    for (const extent of [secret, '../secret.raw', 'link-flat.vmdk', 'nbd:localhost:10809']) {
      const desc = join(cwd, 'desc.vmdk');
      await writeFile(desc, `# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\nRW 2048 FLAT "${extent}" 0\n`);
      const name = fresh();
      const r = await run(['volume', 'import', desc, '--name', name]);
      await expectRefused(r, 'INVALID_INPUT', 2, name);
      expect(jsonError(r).details, extent).toMatchObject({ reason: 'extent' });
    }
  });

  it('a VMDK with a parent (a delta disk) is refused with INVALID_INPUT', async () => {
    const base = join(cwd, 'base.vmdk');
    qemuImg('convert', '-f', 'raw', '-O', 'vmdk', secret, base);
    const child = join(cwd, 'child.vmdk');
    qemuImg('create', '-f', 'vmdk', '-b', base, '-F', 'vmdk', child, '1M');
    const name = fresh();
    const r = await run(['volume', 'import', child, '--name', name]);
    await expectRefused(r, 'INVALID_INPUT', 2, name);
    expect(jsonError(r).details).toMatchObject({ reason: 'backing-file' });
  });

  it('a VMDK descriptor with its flat extent beside it (a plain name) still imports byte for byte', async () => {
    const dir = join(cwd, 'flat');
    await mkdir(dir);
    qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=monolithicFlat', raw, join(dir, 'disk.vmdk'));
    const r = await cairnJson(['volume', 'import', join(dir, 'disk.vmdk'), '--name', 'flat-ok'], { cwd, env: { TMPDIR: tmp } });
    expect(r).toMatchObject({ format: 'vmdk', volume: { size: data.length } });
    const out = join(cwd, 'flat-ok.raw');
    await cairnJson(['volume', 'export', 'flat-ok', out], { cwd });
    expect((await readFile(out)).equals(data)).toBe(true);
    expect(await readdir(tmp)).toEqual([]);
  });

  it('a truncated qcow2 or VMDK (which qemu-img convert reads as zeros, exit 0) is CORRUPT (exit 5), with no volume left', async () => {
    for (const [format, file] of [['qcow2', join(cwd, 'trunc.qcow2')], ['vmdk', join(cwd, 'trunc.vmdk')]] as const) {
      qemuImg('convert', '-f', 'raw', '-O', format, raw, file);
      await truncate(file, 2 * MiB);
      const name = fresh();
      await expectRefused(await run(['volume', 'import', file, '--name', name]), 'CORRUPT', 5, name);
    }
  });

  // qemu-img check lets a file end less than one cluster (qcow2) or grain (VMDK) short of its
  // last one, and convert then reads the cut tail of a data cluster as zeros, exit 0.
  const checkStatus = (file: string): number | null => spawnSync('qemu-img', ['check', file], { stdio: 'ignore' }).status;
  const endOffset = (file: string): number => Number(JSON.parse(execFileSync('qemu-img', ['check', '--output=json', file], { encoding: 'utf8' }))['image-end-offset']);
  /**
   * Cuts `cut` (the image `file` itself, or a sparse extent of the VMDK descriptor `file`) 4 KiB
   * short, which qemu-img check passes: the import is CORRUPT (exit 5) naming it, no volume left.
   */
  const expectCutRefused = async (file: string, cut = file): Promise<CliResult> => {
    await truncate(cut, (await stat(cut)).size - 4096);
    expect(checkStatus(file), 'qemu-img check passes').toBe(0);
    const name = fresh();
    const r = await run(['volume', 'import', file, '--name', name]);
    await expectRefused(r, 'CORRUPT', 5, name);
    expect(jsonError(r).message).toContain(cut);
    expect(jsonError(r).message).toMatch(/cut short/);
    expect(jsonError(r).details).toMatchObject({ file: cut });
    return r;
  };

  it.each([
    ['qcow2', 'qcow2', []],
    ['monolithicSparse VMDK', 'vmdk', ['-o', 'subformat=monolithicSparse']],
  ] as const)('a %s cut 4 KiB short (inside its last data cluster or grain, which qemu-img check passes and convert reads as zeros) is CORRUPT (exit 5) naming the image, with no volume left', async (kind, format, options) => {
    const file = join(cwd, `cut4k-${kind.replace(/ /g, '-')}.${format}`);
    qemuImg('create', '-f', format, ...options, file, '4M');
    execFileSync('qemu-io', ['-f', format, '-c', 'write -P 0x5a 0 1M', file], { stdio: 'ignore' });
    await expectCutRefused(file);
  });

  it('a VMDK descriptor with sparse extents (twoGbMaxExtentSparse): whole, it imports; its second extent cut 4 KiB short (which qemu-img check passes) is CORRUPT (exit 5) naming the extent', async () => {
    const dir = join(cwd, 'split');
    await mkdir(dir);
    const file = join(dir, 'split.vmdk');
    qemuImg('create', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', file, '3G');
    // Data at the end of both extents' files (2 GiB each): each must be judged against its own file.
    execFileSync('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0x33 2100M 1M', file], { stdio: 'ignore' });
    const whole = fresh();
    const ok = await run(['volume', 'import', file, '--name', whole]);
    expect(ok.code, ok.stderr).toBe(0);
    const back = join(cwd, 'split-back.qcow2');
    await cairnJson(['volume', 'export', whole, back], { cwd });
    expect(spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'vmdk', back, file], { stdio: 'ignore' }).status, 'the import reads as the image').toBe(0);

    const r = await expectCutRefused(file, join(dir, 'split-s002.vmdk'));
    expect(jsonError(r).message).toContain(file);
  });

  it('a VMDK descriptor with a VMFSSPARSE extent (qemu opens it as it opens a SPARSE one): whole, it imports byte for byte; cut 4 KiB short (which qemu-img check passes and convert reads as zeros) it is CORRUPT (exit 5) naming the extent', async () => {
    const dir = join(cwd, 'vmfssparse');
    await mkdir(dir);
    const file = join(dir, 'vs.vmdk');
    qemuImg('create', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', file, '4M');
    execFileSync('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0x33 3M 1M', file], { stdio: 'ignore' });
    const desc = await readFile(file, 'latin1');
    await writeFile(file, desc.replace(' SPARSE "', ' VMFSSPARSE "').replace(/createType="[^"]*"/, 'createType="vmfsSparse"'), 'latin1');
    expect(JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' }))['format-specific'].data.extents[0].format).toBe('VMFSSPARSE');
    const want = Buffer.alloc(4 * MiB);
    want.fill(0x5a, 0, MiB);
    want.fill(0x33, 3 * MiB);
    const whole = fresh();
    expect((await run(['volume', 'import', file, '--name', whole])).code).toBe(0);
    const out = join(cwd, 'vmfssparse-back.raw');
    await cairnJson(['volume', 'export', whole, out], { cwd });
    expect((await readFile(out)).equals(want), 'the import reads as the image').toBe(true);

    await expectCutRefused(file, join(dir, 'vs-s001.vmdk'));
  });

  it('VMDK data Cairn cannot check for damage is NOT_SUPPORTED (exit 7) naming its kind, before qemu-img reads it: a SESPARSE extent, a COWD image given as --format vmdk, a SPARSE extent holding a COWD file', async () => {
    const dir = join(cwd, 'unchecked');
    await mkdir(dir);
    // A COWD (VMDK3) sparse header: magic, version 1, flags 3, then sizes; qemu would open it.
    const cowd = Buffer.alloc(2048);
    cowd.write('COWD', 0, 'latin1');
    cowd.writeUInt32LE(1, 4);
    cowd.writeUInt32LE(3, 8);
    cowd.writeUInt32LE(8192, 12); // disk sectors
    cowd.writeUInt32LE(128, 16); // granularity
    cowd.writeUInt32LE(4, 20); // L1 directory offset (sectors)
    cowd.writeUInt32LE(1, 24); // L1 entries
    await writeFile(join(dir, 'old-s001.vmdk'), cowd);
    await writeFile(join(dir, 'se-s001.vmdk'), Buffer.alloc(64 * 1024));
    const descriptor = (type: string, createType: string, extent: string) =>
      `# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="${createType}"\n\nRW 8192 ${type} "${extent}"\n`;
    await writeFile(join(dir, 'se.vmdk'), descriptor('SESPARSE', 'seSparse', 'se-s001.vmdk'));
    await writeFile(join(dir, 'cowd-extent.vmdk'), descriptor('SPARSE', 'twoGbMaxExtentSparse', 'old-s001.vmdk'));
    for (const [file, args, kind] of [
      [join(dir, 'se.vmdk'), [], 'SESPARSE'],
      [join(dir, 'old-s001.vmdk'), ['--format', 'vmdk'], 'COWD'],
      [join(dir, 'cowd-extent.vmdk'), [], 'COWD'],
    ] as const) {
      const name = fresh();
      const r = await run(['volume', 'import', file, '--name', name, ...args]);
      expect(jsonError(r).code, `${file}: ${r.stderr}`).toBe('NOT_SUPPORTED');
      expect(r.code).toBe(7);
      expect(jsonError(r).message).toContain(kind);
      expect(jsonError(r).details).toMatchObject({ kind });
      expect(await volumeNames()).not.toContain(name);
      expect(await readdir(tmp)).toEqual([]);
    }
  });

  it('a qcow2 whose file ends inside its last cluster legitimately (a bitmap directory written last) still imports byte for byte', async () => {
    const file = join(cwd, 'bitmap-last.qcow2');
    qemuImg('create', '-f', 'qcow2', file, '4M');
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', file], { stdio: 'ignore' });
    qemuImg('bitmap', '--add', file, 'b0');
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 2M 64k', file], { stdio: 'ignore' });
    expect((await stat(file)).size).toBeLessThan(endOffset(file)); // the case the check must not refuse
    const name = fresh();
    const r = await run(['volume', 'import', file, '--name', name]);
    expect(r.code, r.stderr).toBe(0);
    const out = join(cwd, 'bitmap-last.out');
    await cairnJson(['volume', 'export', name, out], { cwd });
    const want = Buffer.alloc(4 * MiB);
    want.fill(0x5a, 0, MiB);
    want.fill(0x33, 2 * MiB, 2 * MiB + 64 * 1024);
    expect((await readFile(out)).equals(want)).toBe(true);
  });

  it('a compressed qcow2 (qemu-img convert -c, as cloud images are), which ends short of its last cluster, imports byte for byte: its uncompressed data are still checked, its compressed clusters cannot be', async () => {
    const text = join(cwd, 'text.raw');
    await writeFile(text, Array.from({ length: (4 * MiB) / 16 }, (_, i) => `${String(i).padStart(15, '0')}\n`).join(''));
    const whole = join(cwd, 'compressed.qcow2');
    qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', text, whole);
    expect((await stat(whole)).size).toBeLessThan(endOffset(whole));
    const name = fresh();
    const r = await run(['volume', 'import', whole, '--name', name]);
    expect(r.code, r.stderr).toBe(0);
    const out = join(cwd, 'compressed-back.raw');
    const e = await run(['volume', 'export', name, out]);
    expect(e.code, e.stderr).toBe(0);
    expect((await readFile(out)).equals(await readFile(text))).toBe(true);
  });

  it('a fragmented qcow2 whose qemu-img map is over 16 MiB (170,000 entries) and whose file ends short of its last cluster legitimately (a bitmap) imports byte for byte: the map is read as it comes, not kept', async () => {
    const extents = 85_000; // 512 bytes of data every 4 KiB, in 512-byte clusters: a data and a hole entry each
    const raw = join(cwd, 'frag.raw');
    const fh = await open(raw, 'w');
    for (let i = 0; i < extents; i++) await fh.write(Buffer.alloc(512, ((i * 7) & 0xff) + 1), 0, 512, i * 4096);
    await fh.truncate(extents * 4096);
    await fh.close();
    const image = join(cwd, 'frag.qcow2');
    qemuImg('convert', '-t', 'unsafe', '-W', '-S', '512', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=512', raw, image);
    qemuImg('bitmap', '--add', image, 'b1');
    expect((await stat(image)).size).toBeLessThan(endOffset(image)); // the map is consulted
    expect(execFileSync('qemu-img', ['map', '--output=json', image], { maxBuffer: 256 * MiB }).length).toBeGreaterThan(16 * MiB);
    const name = fresh();
    const r = await run(['volume', 'import', image, '--name', name]);
    expect(r.code, r.stderr).toBe(0);
    const out = join(cwd, 'frag-back.raw');
    const e = await run(['volume', 'export', name, out]);
    expect(e.code, e.stderr).toBe(0);
    expect(spawnSync('cmp', ['-s', raw, out]).status, 'the export equals the image').toBe(0);
    await rm(raw);
    await rm(out);
  }, 180_000);

  it('a VMDK descriptor with 6 sparse extents whose qemu-img map is over 16 MiB (196,000 entries) imports byte for byte, and with its last extent cut 4 KiB short is CORRUPT (exit 5) naming it: one map for all extents, read as it comes, not kept', async () => {
    const dir = join(cwd, 'frag-split');
    await mkdir(dir);
    const file = join(dir, 'fs.vmdk');
    const GRAIN = 65536;
    qemuImg('create', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse,zeroed_grain=on', file, '12G');
    // Every other grain a zeroed grain (no data in the file): a map entry each, and one for each hole between.
    const zeroed = Array.from({ length: (12 * 1024 * MiB) / GRAIN / 2 }, (_, i) => `write -z ${2 * i * GRAIN} ${GRAIN}`);
    // Data in the first and the last extent (the last grain of the image).
    const cmds = [...zeroed, `write -P 0x5a ${GRAIN} ${GRAIN}`, `write -P 0x33 ${12 * 1024 * MiB - GRAIN} ${GRAIN}`].join('\n');
    execFileSync('qemu-io', ['-t', 'unsafe', '-f', 'vmdk', file], { input: `${cmds}\n`, stdio: ['pipe', 'ignore', 'inherit'] });
    const map = execFileSync('qemu-img', ['map', '--output=json', file], { maxBuffer: 256 * MiB });
    expect(map.length).toBeGreaterThan(16 * MiB);
    expect(map.toString().split('\n').filter((l) => l.includes('"start"')).length).toBeGreaterThan(190_000);
    const whole = fresh();
    const ok = await run(['volume', 'import', file, '--name', whole]);
    expect(ok.code, ok.stderr).toBe(0);
    const back = join(cwd, 'frag-split-back.qcow2');
    expect((await run(['volume', 'export', whole, back])).code).toBe(0);
    expect(spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'vmdk', back, file], { stdio: 'ignore' }).status, 'the import reads as the image').toBe(0);
    await rm(back);

    await expectCutRefused(file, join(dir, 'fs-s006.vmdk'));
  }, 180_000);

  it('a streamOptimized VMDK cut inside its last grain (which qemu-img check passes) is CORRUPT (exit 5): its compressed grain cannot be read', async () => {
    const file = join(cwd, 'cut-stream.vmdk');
    qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, file);
    await truncate(file, (await stat(file)).size - 4096);
    expect(checkStatus(file)).toBe(0);
    const name = fresh();
    await expectRefused(await run(['volume', 'import', file, '--name', name]), 'CORRUPT', 5, name);
  });

  it('a damaged qcow2 (a header too short, an invalid L1 table) is CORRUPT (exit 5)', async () => {
    const good = join(cwd, 'good.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, good);
    const short = join(cwd, 'short.qcow2');
    await writeFile(short, (await readFile(good)).subarray(0, 100));
    const badL1 = join(cwd, 'badl1.qcow2');
    const bytes = await readFile(good);
    bytes.fill(0xff, 40, 48);
    await writeFile(badL1, bytes);
    for (const file of [short, badL1]) {
      const name = fresh();
      await expectRefused(await run(['volume', 'import', file, '--name', name]), 'CORRUPT', 5, name);
    }
  });

  it('a raw disk that starts like a qcow2 (a guest wrote one at sector 0): auto is refused saying --format raw; --format raw imports it byte for byte', async () => {
    const header = join(cwd, 'hdr.qcow2');
    qemuImg('create', '-f', 'qcow2', '-b', secret, '-F', 'raw', header, '4M');
    const disk = Buffer.from(data);
    (await readFile(header)).copy(disk, 0, 0, 512);
    const file = join(cwd, 'looks-like.raw');
    await writeFile(file, disk);
    const name = fresh();
    const r = await run(['volume', 'import', file, '--name', name]);
    await expectRefused(r, 'INVALID_INPUT', 2, name);
    expect(jsonError(r).message).toMatch(/--format raw/);
    const ok = await cairnJson(['volume', 'import', file, '--name', 'as-raw', '--format', 'raw'], { cwd, env: { TMPDIR: tmp } });
    expect(ok).toMatchObject({ format: 'raw' });
    const out = join(cwd, 'as-raw.out');
    await cairnJson(['volume', 'export', 'as-raw', out], { cwd });
    expect((await readFile(out)).equals(disk)).toBe(true);
  });

  it('a qcow2 larger than the --into volume is INVALID_INPUT naming both sizes, before anything is converted', async () => {
    const big = join(cwd, 'big.qcow2');
    qemuImg('create', '-f', 'qcow2', big, '1T');
    await cairnJson(['volume', 'create', 'small', '--size', '1M'], { cwd });
    // A TMPDIR that cannot be used: a conversion first would fail on it instead.
    const r = await run(['volume', 'import', big, '--into', 'small'], { TMPDIR: join(cwd, 'no-such-dir') });
    expect(r.code, r.stderr).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT' });
    expect(jsonError(r).message).toMatch(/larger than volume/);
  });

  it('a qemu-img killed by a signal is INTERNAL (exit 1) saying so; one that finds the image locked is BUSY (exit 4); nothing is left', async () => {
    const bin = join(cwd, 'fake-bin');
    await mkdir(bin);
    const good = join(cwd, 'good2.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, good);
    const fake = join(bin, 'qemu-img');
    const env = { PATH: `${bin}:${process.env.PATH}` };
    await writeFile(fake, '#!/bin/sh\nkill -KILL $$\n');
    await chmod(fake, 0o755);
    let name = fresh();
    let r = await run(['volume', 'import', good, '--name', name], env);
    await expectRefused(r, 'INTERNAL', 1, name);
    expect(jsonError(r).message).toMatch(/qemu-img .*SIGKILL/);
    await writeFile(fake, `#!/bin/sh\necho "qemu-img: Could not open '$4': Failed to get shared \\"write\\" lock" >&2\necho 'Is another process using the image [x]?' >&2\nexit 1\n`);
    name = fresh();
    r = await run(['volume', 'import', good, '--name', name], env);
    await expectRefused(r, 'BUSY', 4, name);
    // export: the same mapping, and no temporary image beside the output
    await cairnJson(['volume', 'import', raw, '--name', 'exp'], { cwd });
    const outDir = join(cwd, 'out');
    await mkdir(outDir);
    await writeFile(fake, '#!/bin/sh\nkill -KILL $$\n');
    r = await run(['volume', 'export', 'exp', join(outDir, 'x.qcow2')], env);
    expect(r.code, r.stderr).toBe(1);
    expect(jsonError(r).code).toBe('INTERNAL');
    expect(await readdir(outDir)).toEqual([]);
    expect(await readdir(tmp)).toEqual([]);
  });

  it('SIGTERM while qemu-img converts kills the conversion at once: CANCELLED (exit 130), no temporary file, no volume', async () => {
    const bin = join(cwd, 'slow-bin');
    await mkdir(bin);
    // info and check are the real ones; convert writes its pid, then hangs for ten minutes
    const pidFile = join(cwd, 'convert.pid');
    await writeFile(join(bin, 'qemu-img'), `#!/bin/sh\nif [ "$1" = convert ]; then echo $$ > ${pidFile}; exec sleep 600; fi\nexec /usr/bin/qemu-img "$@"\n`);
    await chmod(join(bin, 'qemu-img'), 0o755);
    const q = join(cwd, 'slow.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, q);
    const name = fresh();
    const { child, exit } = cairnSpawn(['volume', 'import', q, '--name', name, '--json'], { cwd, env: { TMPDIR: tmp, PATH: `${bin}:${process.env.PATH}` } });
    // The convert runs once its pid is written in full (the sleep follows at once: a SIGTERM
    // before the exec would have to kill the shell, which is the same child).
    const sleep = (ms: number) => new Promise<undefined>((r) => setTimeout(() => r(undefined), ms));
    const started = Date.now();
    let pidText = '';
    while (!/^\d+\n$/.test(pidText) && Date.now() - started < 30_000) {
      await sleep(50);
      pidText = await readFile(pidFile, 'utf8').catch(() => '');
    }
    expect(pidText, 'the convert never started').toMatch(/^\d+\n$/);
    const pid = Number(pidText.trim());
    const alive = (): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    // The command ends long before the fake convert's ten minutes are up, and the convert is gone:
    // it was killed, not waited for. 45 s tells the two apart on a loaded machine.
    child.kill('SIGTERM');
    const r = await Promise.race([exit, sleep(45_000)]);
    const outlived = alive();
    // Our own processes only (the CLI and its fake convert), so that nothing outlives a failed run.
    if (outlived) process.kill(pid, 'SIGKILL');
    if (!r) child.kill('SIGKILL');
    expect(r, 'the command waited for the convert instead of killing it').toBeDefined();
    expect(outlived, 'the conversion still runs').toBe(false);
    await expectRefused(r!, 'CANCELLED', 130, name);
  });

  it('a $TMPDIR too deep for a unix socket path (107 bytes) does not stop qcow2 and VMDK import and export: they round-trip byte for byte, leaving it empty', async () => {
    const deep = join(tmp, 'd'.repeat(Math.max(1, 100 - tmp.length)));
    await mkdir(deep);
    try {
      if (!(await volumeNames()).includes('deep-src')) await cairnJson(['volume', 'import', raw, '--name', 'deep-src'], { cwd });
      for (const format of ['qcow2', 'vmdk']) {
        const image = join(cwd, `deep.${format}`);
        const exported = await run(['volume', 'export', 'deep-src', image], { TMPDIR: deep });
        expect(exported.code, exported.stderr).toBe(0);
        expect(await readdir(deep)).toEqual([]);
        const name = fresh();
        const imported = await run(['volume', 'import', image, '--name', name], { TMPDIR: deep });
        expect(imported.code, imported.stderr).toBe(0);
        expect(await readdir(deep)).toEqual([]);
        const out = join(cwd, `deep-${name}.raw`);
        await cairnJson(['volume', 'export', name, out], { cwd });
        expect((await readFile(out)).equals(data), `${format} round trip`).toBe(true);
      }
    } finally {
      await rm(deep, { recursive: true, force: true });
    }
  });

  it('SIGINT while an --into import zeroes the volume past the end of a qcow2 (qemu-img done) stops it: CANCELLED (exit 130), nothing left in TMPDIR', async () => {
    const q = join(cwd, 'into-tail.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, q);
    const target = fresh();
    // Only data is read and compared past the image (holes already read as zeros): a volume
    // holding 1 GiB of data past the 4 MiB image takes a while to zero.
    const full = join(cwd, 'into-tail-data.raw');
    const fh = await open(full, 'w');
    const chunk = Buffer.alloc(16 * MiB, 0x5a);
    for (let off = 0; off < 1024 * MiB; off += chunk.length) await fh.write(chunk, 0, chunk.length, off);
    await fh.close();
    await cairnJson(['volume', 'import', full, '--name', target], { cwd });
    await rm(full);
    const { child, exit } = cairnSpawn(['volume', 'import', q, '--into', target, '--json'], { cwd, env: { TMPDIR: tmp } });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    let settled = false;
    void exit.then(() => (settled = true));
    // "converting" is printed once the socket listens; the socket goes once qemu-img is done, its
    // directory only after the volume past the image was zeroed: that is when the signal comes.
    const inTail = async (): Promise<boolean> => {
      if (!stderr.includes('converting qcow2 image')) return false;
      const dirs = await readdir(tmp);
      return dirs.length === 1 && !(await readdir(join(tmp, dirs[0]!)).catch(() => ['gone'])).includes('nbd.sock');
    };
    while (!settled && !(await inTail())) await new Promise((r) => setTimeout(r, 10));
    expect(settled, 'the import ended before the volume past the image was being zeroed').toBe(false);
    child.kill('SIGINT');
    const r = await exit;
    expect(r.code, r.stderr).toBe(130);
    expect(jsonError(r).code).toBe('CANCELLED');
    expect(await readdir(tmp)).toEqual([]);
    expect(await cairnJson(['volume', 'show', target], { cwd })).toMatchObject({ status: 'available' });
  }, 120_000);

  describe.skipIf(!isRoot)('a full disk (a 1 MiB tmpfs)', () => {
    let full: string;
    beforeAll(async () => {
      full = join(cwd, 'full');
      await mkdir(full);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', full]);
    });
    afterAll(() => {
      if (full) execFileSync('umount', [full]);
    });

    it('qcow2 and VMDK import and export need no temporary copy of the volume: with TMPDIR a full 1 MiB tmpfs a 4 MiB volume round-trips byte for byte', async () => {
      if (!(await volumeNames()).includes('via-nbd')) await cairnJson(['volume', 'import', raw, '--name', 'via-nbd'], { cwd });
      for (const format of ['qcow2', 'vmdk']) {
        const image = join(cwd, `via-nbd.${format}`);
        const exported = await run(['volume', 'export', 'via-nbd', image], { TMPDIR: full });
        expect(exported.code, exported.stderr).toBe(0);
        expect(JSON.parse(exported.stdout)).toMatchObject({ format, size: 4 * MiB });
        expect(await readdir(full)).toEqual([]);
        // Read back by qemu-img itself, not by Cairn.
        const back = join(cwd, `via-nbd-${format}.raw`);
        qemuImg('convert', '-f', format, '-O', 'raw', image, back);
        expect((await readFile(back)).equals(data), `${format} export`).toBe(true);
        const name = fresh();
        const imported = await run(['volume', 'import', image, '--name', name], { TMPDIR: full });
        expect(imported.code, imported.stderr).toBe(0);
        expect(JSON.parse(imported.stdout)).toMatchObject({ format, created: true, volume: { name, size: 4 * MiB } });
        expect(await readdir(full)).toEqual([]);
        const out = join(cwd, `via-nbd-${name}.raw`);
        await cairnJson(['volume', 'export', name, out], { cwd });
        expect((await readFile(out)).equals(data), `${format} import`).toBe(true);
      }
    });

    it('import of a qcow2 into a volume store on a full disk is UNAVAILABLE (exit 6), not CORRUPT for the EIO qemu-img saw; the new volume is deleted', async () => {
      const store = join(cwd, 'full-store');
      await mkdir(store);
      const init = await cairn(['init', '--yes', '--repository-dir', join(store, 'repo'), '--volumes-dir', join(full, 'volumes'), '--json'], { cwd: store });
      expect(init.code, init.stderr).toBe(0);
      const q = join(cwd, 'full-store.qcow2');
      qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, q);
      try {
        const r = await cairn(['volume', 'import', q, '--name', 'too-big', '--json'], { cwd: store, env: { TMPDIR: tmp } });
        expect(r.code, r.stderr).toBe(6);
        expect(jsonError(r).code).toBe('UNAVAILABLE');
        expect(jsonError(r).message).not.toMatch(/qemu-img/);
        expect((await cairnJson<{ name: string }[]>(['volume', 'list'], { cwd: store })).map((v) => v.name)).not.toContain('too-big');
        expect(await readdir(tmp)).toEqual([]);
      } finally {
        await rm(join(full, 'volumes'), { recursive: true, force: true });
      }
    });

    it('export to qcow2 onto a full disk is UNAVAILABLE (exit 6), as a raw export is, leaving nothing', async () => {
      if (!(await volumeNames()).includes('exp2')) await cairnJson(['volume', 'import', raw, '--name', 'exp2'], { cwd });
      for (const out of ['x.qcow2', 'x.vmdk']) {
        const r = await run(['volume', 'export', 'exp2', join(full, out)]);
        expect(r.code, r.stderr).toBe(6);
        expect(jsonError(r).code).toBe('UNAVAILABLE');
        expect(await readdir(full)).toEqual([]);
        expect(await readdir(tmp)).toEqual([]);
      }
    });
  });
});
