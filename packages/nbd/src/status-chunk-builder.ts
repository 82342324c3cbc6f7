/**
 * The payload of one NBD_REPLY_TYPE_BLOCK_STATUS chunk (32-bit context id, then a 32-bit length
 * and 32-bit flags per descriptor), written as the backend's descriptors arrive, so a request
 * being answered holds these wire bytes only (8 per descriptor, what `replyBound` charges), never
 * one object per descriptor.
 *
 * Descriptors are consecutive from the request's offset, and consecutive equal flags always
 * become one descriptor, whatever the minimum block size (proto.md: the server "SHOULD use
 * different *status* values between consecutive descriptors where feasible"). With a minimum
 * block size `min` > 1 they are first folded onto blocks of `min` bytes counted from that offset
 * (proto.md: the server "MUST use descriptor lengths that are an integer multiple of any
 * advertised minimum block size"): a block made of parts with different flags gets `merge` of
 * them (see `safeMerge`). A partial block after whole ones is left out (proto.md: the server
 * "MAY return less data than requested"); when no whole block was seen, the one partial block is
 * the one descriptor (the caller arranges that only for requests that broke the client's
 * alignment MUST). With `min` 1 the descriptors are the backend's, equal neighbours joined.
 *
 * At most `maxDescriptors` descriptors are written: those of the fold of everything added, cut to
 * the first `maxDescriptors` (later parts only lengthen the last one while their flags match it).
 */
export class StatusChunkBuilder {
  private body: Buffer;
  private count = 0;
  /** Set once a descriptor past `maxDescriptors` was due: nothing more is written. */
  private full = false;
  /** Bytes added so far. */
  private at = 0;
  /** Flags of the block begun at `at - at % min`, while it is partly seen. */
  private acc = 0;
  /** Descriptors given to `add`. */
  taken = 0;

  constructor(
    contextId: number,
    private readonly min: number,
    private readonly merge: (a: number, b: number) => number,
    private readonly maxDescriptors: number,
  ) {
    this.body = Buffer.allocUnsafe(4 + 8 * Math.min(maxDescriptors, 64));
    this.body.writeUInt32BE(contextId, 0);
  }

  /** Bytes added so far (the sum of the lengths given to `add`). */
  get covered(): number {
    return this.at;
  }

  /** Adds the next descriptor: `length` a positive whole number, the sum of all at most 2^32 - 1. */
  add(length: number, flags: number): void {
    this.taken++;
    if (this.min === 1) {
      this.at += length;
      return this.emit(length, flags);
    }
    const min = this.min;
    let left = length;
    while (left > 0) {
      const into = this.at % min;
      if (into === 0 && left >= min) {
        const whole = left - (left % min);
        this.emit(whole, flags);
        this.at += whole;
        left -= whole;
        continue;
      }
      const take = Math.min(left, min - into);
      this.acc = into === 0 ? flags : this.merge(this.acc, flags);
      this.at += take;
      left -= take;
      if (this.at % min === 0) this.emit(min, this.acc);
    }
  }

  /** The chunk's payload, exactly as long as its descriptors need (at least one: see the class comment). */
  finish(): Buffer {
    if (this.count === 0 && this.at % this.min !== 0) this.emit(this.at % this.min, this.acc);
    const used = 4 + 8 * this.count;
    if (used === this.body.length) return this.body;
    const exact = Buffer.allocUnsafe(used);
    this.body.copy(exact, 0, 0, used);
    return exact;
  }

  /** Descriptors written. */
  get descriptors(): number {
    return this.count;
  }

  /** Writes the next descriptor, or lengthens the last one when its flags are the same. */
  private emit(length: number, flags: number): void {
    if (this.full) return;
    const last = 4 + 8 * (this.count - 1);
    if (this.count > 0 && this.body.readUInt32BE(last + 4) === flags >>> 0) {
      this.body.writeUInt32BE(this.body.readUInt32BE(last) + length, last);
      return;
    }
    if (this.count === this.maxDescriptors) {
      this.full = true;
      return;
    }
    const at = 4 + 8 * this.count;
    if (at + 8 > this.body.length) this.grow();
    this.body.writeUInt32BE(length, at);
    this.body.writeUInt32BE(flags >>> 0, at + 4);
    this.count++;
  }

  /** Doubles the room for descriptors, never past `maxDescriptors`. */
  private grow(): void {
    const room = Math.min(this.maxDescriptors, 2 * this.count);
    const next = Buffer.allocUnsafe(4 + 8 * room);
    this.body.copy(next, 0, 0, 4 + 8 * this.count);
    this.body = next;
  }
}
