/**
 * An object written in parts (ObjectStore.openWrite) into a temporary file of the object's
 * directory, published by the store's own put path (fsync, rename or link, fsync of the
 * directory). Parts handed over in aligned memory at aligned offsets go to the device with
 * O_DIRECT, as whole-object puts from aligned buffers do; the first part that is not switches
 * the file to buffered writes for the rest. Any failure removes the temporary file at once.
 * From creation to commit or abort the file is kept fresh (temp-refresh.ts), however long the
 * caller takes between parts, so sweepTemp never takes it for a dead writer's; a writer neither
 * committed nor aborted keeps it until its process ends.
 *
 * Cancellation (openWrite's `signal`, for the writer's whole life): each part's write(2)s and
 * commit's steps (truncate, fsync, close, rename or link) check it first; once aborted, the part
 * or commit in progress rejects `CANCELLED` at its next step, the temporary file is removed and
 * every later call fails `CANCELLED` too, so nothing is ever published after the abort was seen
 * (the publishing step checks last, see the store's publish). A write(2) or fsync already in the
 * kernel finishes first. abort() takes no signal: it always cleans up.
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { CairnError, DIRECT_IO_ALIGN, isDirectIoReady, writeDirect, type ObjectPartWriter } from '@cairn/core';
import { checkSignal, createTempFile, writeAll } from './durable-fs.js';
import { DRIVER, writeError } from './fs-errors.js';
import { assertObjectData } from './object-data.js';
import { keepFresh } from './temp-refresh.js';

export class PosixPartWriter implements ObjectPartWriter {
  /** The parts' writes, one after another in call order. */
  private chain: Promise<void> = Promise.resolve();
  /** Bytes appended so far (the offset of the next part). */
  private size = 0;
  /** An O_DIRECT write padded the file past `size` with zeros: commit truncates it back. */
  private padded = false;
  private failure: CairnError | undefined;
  private finished = false;
  /** Ends the refreshing of the temporary file's mtime; called before the file is closed. */
  private readonly stopRefresh = keepFresh(() => this.fh);

  private constructor(
    private readonly key: string,
    private readonly temp: string,
    private fh: FileHandle | undefined,
    private direct: boolean,
    /** Publishes the fsynced and closed temporary file under the key (the store's put path, which checks `signal` last). */
    private readonly publish: (temp: string) => Promise<void>,
    private readonly signal: AbortSignal | undefined,
  ) {}

  /**
   * Creates the temporary file (exclusively) in `dir`, the key's directory, which must exist.
   * `signal` aborted by the time it is made: `CANCELLED`, and the file is removed.
   */
  static async create(key: string, dir: string, publish: (temp: string) => Promise<void>, signal?: AbortSignal): Promise<PosixPartWriter> {
    checkSignal(signal);
    const { path, fh, direct } = await createTempFile(dir, true).catch((err: unknown) => Promise.reject(writeError(err, `starting the write of ${key}`)));
    const writer = new PosixPartWriter(key, path, fh, direct, publish, signal);
    if (signal?.aborted) {
      await writer.abort();
      checkSignal(signal);
    }
    return writer;
  }

  /** A part that is no Uint8Array is refused (`INVALID_INPUT`, object-data.ts) and changes nothing: the writer stays usable. */
  append(data: Uint8Array): Promise<void> {
    if (this.finished) return Promise.reject(new CairnError('INTERNAL', `append to ${this.key} after its commit or abort`, { driver: DRIVER }));
    try {
      assertObjectData(data, `writing ${this.key}`);
    } catch (err) {
      return Promise.reject(err);
    }
    const at = this.size;
    this.size += data.length;
    const written = this.chain.then(() => this.write(data, at));
    this.chain = written.catch(() => undefined);
    return written;
  }

  async commit(): Promise<void> {
    if (this.finished) throw new CairnError('INTERNAL', `commit of ${this.key} after its commit or abort`, { driver: DRIVER });
    this.finished = true;
    await this.chain;
    if (this.failure) throw this.failure;
    const fh = this.fh!;
    try {
      checkSignal(this.signal);
      if (this.padded) await fh.truncate(this.size);
      checkSignal(this.signal);
      await fh.sync();
      this.stopRefresh();
      this.fh = undefined;
      await fh.close();
    } catch (err) {
      this.failure = writeError(err, `writing ${this.key}`);
      await this.discard();
      throw this.failure;
    }
    // publish removes the temporary file itself when it fails (as put does).
    await this.publish(this.temp);
  }

  async abort(): Promise<void> {
    this.finished = true;
    await this.chain;
    await this.discard();
  }

  private async write(data: Uint8Array, at: number): Promise<void> {
    if (this.failure) throw this.failure;
    try {
      checkSignal(this.signal);
      if (this.direct && !isDirectIoReady(data, at)) await this.leaveDirect();
      if (this.direct) {
        await writeDirect(this.fh!, data, at, this.signal);
        this.padded ||= data.length % DIRECT_IO_ALIGN !== 0;
        return;
      }
      await writeAll(this.fh!, data, at, this.signal);
    } catch (err) {
      this.failure = writeError(err, `writing ${this.key}`);
      await this.discard();
      throw this.failure;
    }
  }

  /** Reopens the temporary file for buffered writes (the O_DIRECT handle's writes are on the device already). */
  private async leaveDirect(): Promise<void> {
    const buffered = await open(this.temp, 'r+');
    const directFh = this.fh!;
    [this.fh, this.direct] = [buffered, false];
    await directFh.close();
  }

  /** Closes and removes the temporary file, once; errors are beside the point here. */
  private async discard(): Promise<void> {
    this.stopRefresh();
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close().catch(() => undefined);
    await unlink(this.temp).catch(() => undefined);
  }
}
