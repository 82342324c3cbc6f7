import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { writeFileSync } from 'node:fs';
import { claimConfigFile, removeIfOurs } from '../src/io/config-claim.js';
import { removeDir, tempDir } from './helpers.js';

/** claimConfigFile in this process: what publish and release leave, and signals (process.kill stubbed). */
describe('claimConfigFile', () => {
  let base: string;
  let n = 0;
  beforeAll(async () => (base = await tempDir('cairn-config-claim-')));
  afterAll(() => removeDir(base));
  afterEach(() => vi.restoreAllMocks());

  const configIn = async () => {
    const dir = join(base, `case-${++n}`);
    await mkdir(dir);
    return { dir, file: join(dir, 'cairn.config.json') };
  };

  it('publish(text) over its own empty file writes the config and leaves no other file; release() then leaves it', async () => {
    const { dir, file } = await configIn();
    const claim = await claimConfigFile(file);
    expect((await stat(file)).size).toBe(0);
    expect(await claim.publish('{"version": 1}\n')).toEqual({}); // published, and durably (no notDurable)
    await claim.release();
    expect(await readFile(file, 'utf8')).toBe('{"version": 1}\n');
    expect(await readdir(dir)).toEqual(['cairn.config.json']);
  });

  it('publish(text) after another file took the empty file\'s place resolves false and leaves that file; so does release()', async () => {
    const { dir, file } = await configIn();
    const claim = await claimConfigFile(file);
    await writeFile(join(dir, 'other'), 'written by init --force');
    await rename(join(dir, 'other'), file);
    expect(await claim.publish('{"version": 1}\n')).toBe(false);
    await claim.release();
    expect(await readFile(file, 'utf8')).toBe('written by init --force');
    expect(await readdir(dir)).toEqual(['cairn.config.json']);
  });

  it('publish(text) after its empty file was replaced by another empty file (another init\'s claim) resolves false and leaves it', async () => {
    const { dir, file } = await configIn();
    const claim = await claimConfigFile(file);
    await writeFile(join(dir, 'other'), '');
    await rename(join(dir, 'other'), file);
    const before = await stat(file);
    expect(await claim.publish('{"version": 1}\n')).toBe(false);
    await claim.release();
    expect((await stat(file)).ino).toBe(before.ino);
    expect(await readdir(dir)).toEqual(['cairn.config.json']);
  });

  /**
   * The handlers are there before the create: a signal that comes while it is under way (emitted
   * here right after the call, whose open has not returned yet) removes the empty file once the
   * create returns, then ends the process by that signal (process.kill, stubbed here).
   */
  it('SIGINT while claimConfigFile creates the empty file: the file is removed once made, and the signal raised again', async () => {
    const { dir, file } = await configIn();
    const others = process.rawListeners('SIGINT') as ((...args: unknown[]) => void)[];
    process.removeAllListeners('SIGINT');
    const sigterm = process.listenerCount('SIGTERM');
    const kill = vi.spyOn(process, 'kill').mockImplementation(() => true);
    try {
      const claiming = claimConfigFile(file);
      claiming.catch(() => undefined);
      process.emit('SIGINT', 'SIGINT');
      await expect(claiming).rejects.toMatchObject({ code: 'CANCELLED' });
      expect(kill).toHaveBeenCalledWith(process.pid, 'SIGINT');
      expect(await readdir(dir)).toEqual([]);
      expect([process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')]).toEqual([0, sigterm]);
    } finally {
      process.removeAllListeners('SIGINT');
      for (const l of others) process.on('SIGINT', l);
    }
  });

  it("removeIfOurs never deletes a file that replaced the claim: when another claim takes the name while it is set aside, it stays as <config>.displaced-<hex>", async () => {
    const { dir, file } = await configIn();
    await writeFile(file, 'a forced init\'s config');
    let checks = 0;
    // First check: the name looks like the claim (a forced config landed right after). Second
    // check, of the file set aside: not ours, and meanwhile another init has claimed the name.
    const ours = () => {
      checks++;
      if (checks === 1) return true;
      writeFileSync(file, '', { flag: 'wx' });
      return false;
    };
    expect(removeIfOurs(file, ours)).toBe('theirs');
    const names = (await readdir(dir)).sort();
    expect(names).toHaveLength(2);
    expect(names[0]).toBe('cairn.config.json');
    expect(names[1]).toMatch(/^cairn\.config\.json\.displaced-[0-9a-f]{8}$/);
    expect(await readFile(join(dir, names[1]!), 'utf8')).toBe("a forced init's config");
    expect((await stat(file)).size).toBe(0);
  });

  it("release() leaves another empty file at the name alone even when it has the claim's inode number (ext4 reuses a freed one at once)", async () => {
    const { file } = await configIn();
    const claim = await claimConfigFile(file);
    const before = await stat(file);
    await unlink(file); // the claim is gone (e.g. replaced, then removed) ...
    await utimesPause();
    await writeFile(file, ''); // ... and another init's empty claim takes the name
    const after = await stat(file);
    // On ext4 (this project's machines) the inode number comes back: the case under test.
    if (after.ino === before.ino) expect(after.birthtimeMs).not.toBe(before.birthtimeMs);
    await claim.release();
    expect((await stat(file)).ino).toBe(after.ino);
  });
});

/** Lets the clock move on, so that two files made one after the other differ in birth time. */
const utimesPause = () => new Promise((resolve) => setTimeout(resolve, 20));
