/**
 * Watches the fsync(2) calls this process makes through FileHandle.sync (the store's and core's
 * syncDir alike): records each one's start and end with the path of its descriptor (read from
 * /proc/self/fd, so Linux only), and lets a test hold back or fail the next fsync of a path.
 * Tests add their own events with `mark`, so the log shows what finished before what.
 */
import { readlinkSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

type Sync = (this: FileHandle) => Promise<void>;

interface Rule {
  /** The path of the fsync this rule is for, or a test of it. */
  path: string | ((path: string) => boolean);
  run: (path: string) => Promise<void>;
}

export class FsyncProbe {
  /** `fsync <path>` when an fsync starts, `synced <path>` when it succeeded, and the marks. */
  readonly log: string[] = [];
  private readonly rules: Rule[] = [];

  private constructor(
    private readonly proto: { sync: Sync },
    private readonly original: Sync,
  ) {}

  /** Patches FileHandle.prototype.sync until `restore`. */
  static async install(): Promise<FsyncProbe> {
    const fh = await open('/dev/null', 'r');
    const proto = Object.getPrototypeOf(fh) as { sync: Sync };
    await fh.close();
    const probe = new FsyncProbe(proto, proto.sync);
    proto.sync = async function (this: FileHandle) {
      const path = readlinkSync(`/proc/self/fd/${this.fd}`);
      probe.log.push(`fsync ${path}`);
      const rule = probe.rules.findIndex((r) => (typeof r.path === 'string' ? r.path === path : r.path(path)));
      if (rule >= 0) await probe.rules.splice(rule, 1)[0]!.run(path);
      await probe.original.call(this);
      probe.log.push(`synced ${path}`);
    };
    return probe;
  }

  restore(): void {
    this.proto.sync = this.original;
  }

  mark(event: string): void {
    this.log.push(event);
  }

  /**
   * The next fsync of `path` (or of a path `path` accepts) waits for `release`; `reached` resolves
   * with the path when it has started.
   */
  hold(path: string | ((path: string) => boolean)): { reached: Promise<string>; release: () => void } {
    let release!: () => void;
    let reached!: (path: string) => void;
    const released = new Promise<void>((r) => (release = r));
    const started = new Promise<string>((r) => (reached = r));
    this.rules.push({ path, run: async (synced) => (reached(synced), await released) });
    return { reached: started, release };
  }

  /** The next fsync of `path` fails with the errno `code`. */
  failNext(path: string, code: string): void {
    this.rules.push({ path, run: async () => Promise.reject(Object.assign(new Error(`${code}: injected fsync failure`), { code, syscall: 'fsync' })) });
  }

  /** Log entries from `from` on (an index into the log). */
  since(from: number): string[] {
    return this.log.slice(from);
  }
}
