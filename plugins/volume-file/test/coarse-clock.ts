import { fileSystemClock, type ImageStamp, type StampClock } from '@cairn/core';

/**
 * A file system whose timestamp clock ticks only when someone waits for it (`pause`) or the test
 * says so (`tick`): real timestamps are floored to the last tick at or before them, as a coarse
 * clock (1–10 ms ticks; whole seconds on ext4 with 128-byte inodes) would have recorded them.
 * Two changes with no tick between them get the same mtime and ctime, deterministically: the
 * "racy git" case, which this machine's multigrain timestamps never show. Ticks are readings of
 * the real clock, so real files keep their order relative to them.
 */
export class CoarseClock implements StampClock {
  private readonly ticks: bigint[] = [];
  /** With `frozen`, waiting does not make the clock tick either. */
  constructor(
    private readonly dir: string,
    private readonly frozen = false,
  ) {}

  async tick(): Promise<void> {
    this.ticks.push(await fileSystemClock.now(this.dir));
  }

  /**
   * The tick a real timestamp `t` was recorded at, as first computed. Fixed once seen: a tick read
   * later may equal an earlier change's time (multigrain timestamps give a coarse reading equal to
   * the last fine-grained one), and must not move that change to itself after the fact, as a
   * coarse file system, which stores the tick, never would (a stamp would then change by itself).
   */
  private readonly seen = new Map<bigint, bigint>();

  private floor(t: bigint): bigint {
    const known = this.seen.get(t);
    if (known !== undefined) return known;
    let f = 0n;
    for (const b of this.ticks) if (b <= t) f = b;
    this.seen.set(t, f);
    return f;
  }

  async stat(path: string): Promise<ImageStamp> {
    const s = await fileSystemClock.stat(path);
    return { ...s, mtimeNs: String(this.floor(BigInt(s.mtimeNs))), ctimeNs: String(this.floor(BigInt(s.ctimeNs))) };
  }

  async now(): Promise<bigint> {
    return this.ticks.at(-1) ?? 0n;
  }

  async pause(): Promise<void> {
    if (!this.frozen) await this.tick();
  }
  touch(path: string): Promise<void> {
    return fileSystemClock.touch(path);
  }
}
