// Hand-built NBD frames for protocol-violation tests, independent of the package's own codec.
import net from 'node:net';

// Numbers as proto.md gives them, written here rather than taken from the package, so the tests
// hold the package to the spec.
/** Reply flag: the last chunk of a structured reply. */
export const DONE = 1;
/** Structured reply chunk types. */
export const NONE = 0;
export const OFFSET_DATA = 1;
export const OFFSET_HOLE = 2;
export const BLOCK_STATUS = 5;
export const ERROR = 0x8001;
export const ERROR_OFFSET = 0x8002;
/** The error value for an invalid argument. */
export const EINVAL = 22;

/** A socket with exact-length awaited reads. */
export class RawSocket {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: (() => void) | undefined;
  readonly closed: Promise<void>;
  private ended = false;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.buffered += d.length;
      this.waiter?.();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.ended = true;
        this.waiter?.();
        resolve();
      }),
    );
  }

  /** To a unix socket `path` or a TCP address. `allowHalfOpen`: keep our side open (and writable) after the peer ends its side. */
  static connect(to: string | { port: number; host?: string }, allowHalfOpen = false): Promise<RawSocket> {
    return new Promise((resolve, reject) => {
      const s = net.connect(typeof to === 'string' ? { path: to, allowHalfOpen } : { host: '127.0.0.1', ...to, allowHalfOpen });
      s.once('connect', () => resolve(new RawSocket(s))).once('error', reject);
    });
  }

  /** Bytes received so far and not yet read. */
  get pending(): number {
    return this.buffered;
  }

  async read(n: number): Promise<Buffer> {
    while (this.buffered < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buffered}/${n} bytes`);
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    const first = this.chunks[0];
    let out: Buffer;
    if (first && first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks, this.buffered);
      out = all.subarray(0, n);
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.buffered -= n;
    return out;
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }
}

const IHAVEOPT = Buffer.from('IHAVEOPT');

/** Big-endian encoders of the protocol's integers. */
export function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}
export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}
export function u64(v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  return b;
}

/** One client option frame: IHAVEOPT, the option, the data length, the data. */
export function optionFrame(opt: number, data: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([IHAVEOPT, u32(opt), u32(data.length), data]);
}

/** Connects and reads the 18-byte greeting, then sends the client flags FIXED_NEWSTYLE | NO_ZEROES: the socket is ready for options. */
export async function rawHello(to: string | { port: number; host?: string }): Promise<RawSocket> {
  const raw = await RawSocket.connect(to);
  await raw.read(18);
  raw.write(u32(3));
  return raw;
}

/**
 * Reads the replies to option `opt` up to its final one (ACK or an error type), all of them in
 * order. Throws when a reply names another option (the server must echo the option it answers).
 */
export async function optionReplies(raw: RawSocket, opt: number): Promise<Array<{ type: number; body: Buffer }>> {
  const out: Array<{ type: number; body: Buffer }> = [];
  for (;;) {
    const head = await raw.read(20);
    if (head.readUInt32BE(8) !== opt) throw new Error(`reply names option ${head.readUInt32BE(8)}, expected ${opt}`);
    const type = head.readUInt32BE(12);
    out.push({ type, body: await raw.read(head.readUInt32BE(16)) });
    if (type === 1 || type >= 0x80000000) return out;
  }
}

/** Connects and negotiates `exportName` with NBD_OPT_GO only (simple replies). Returns the export size and transmission flags. */
export async function rawGo(to: string | { port: number; host?: string }, exportName: string): Promise<{ raw: RawSocket; size: number; flags: number }> {
  const raw = await RawSocket.connect(to);
  await raw.read(18);
  raw.write(u32(3));
  const name = Buffer.from(exportName);
  const data = Buffer.concat([u32(name.length), name, u16(0)]);
  raw.write(Buffer.concat([IHAVEOPT, u32(7), u32(data.length), data]));
  let size = -1;
  let flags = -1;
  for (;;) {
    const head = await raw.read(20);
    const type = head.readUInt32BE(12);
    const body = await raw.read(head.readUInt32BE(16));
    if (type === 3 && body.readUInt16BE(0) === 0) {
      size = Number(body.readBigUInt64BE(2));
      flags = body.readUInt16BE(10);
    }
    if (type === 1) return { raw, size, flags };
    if (type >= 0x80000000) throw new Error(`GO refused: ${type}`);
  }
}

/**
 * Connects with structured replies, selects `metaContexts` on `exportName` (NBD_OPT_SET_META_CONTEXT)
 * and enters transmission with NBD_OPT_GO. Returns the transmission flags and the ids granted, by name.
 */
export async function rawStructuredGo(path: string, exportName: string, metaContexts: string[]): Promise<{ raw: RawSocket; flags: number; contexts: Map<string, number> }> {
  const raw = await RawSocket.connect(path);
  await raw.read(18);
  raw.write(u32(3));
  const option = async (opt: number, data: Buffer): Promise<Array<{ type: number; body: Buffer }>> => {
    raw.write(Buffer.concat([IHAVEOPT, u32(opt), u32(data.length), data]));
    const replies: Array<{ type: number; body: Buffer }> = [];
    for (;;) {
      const head = await raw.read(20);
      const type = head.readUInt32BE(12);
      replies.push({ type, body: await raw.read(head.readUInt32BE(16)) });
      if (type === 1) return replies;
      if (type >= 0x80000000) throw new Error(`option ${opt} refused: ${type}`);
    }
  };
  await option(8, Buffer.alloc(0));
  const name = Buffer.from(exportName);
  const queries = metaContexts.map((q) => Buffer.from(q));
  const contexts = new Map<string, number>();
  const meta = await option(10, Buffer.concat([u32(name.length), name, u32(queries.length), ...queries.flatMap((q) => [u32(q.length), q])]));
  for (const r of meta) if (r.type === 4) contexts.set(r.body.subarray(4).toString(), r.body.readUInt32BE(0));
  const go = await option(7, Buffer.concat([u32(name.length), name, u16(0)]));
  const info = go.find((r) => r.type === 3 && r.body.readUInt16BE(0) === 0)!;
  return { raw, flags: info.body.readUInt16BE(10), contexts };
}

/** One request frame with command flags: magic, flags, type, cookie, offset, length (+ payload). */
export function flaggedRequest(type: number, flags: number, cookie: number, offset: number, length: number, payload?: Buffer): Buffer {
  return Buffer.concat([u32(0x25609513), u16(flags), u16(type), u64(cookie), u64(offset), u32(length), payload ?? Buffer.alloc(0)]);
}

/** Reads one structured reply chunk. */
export async function readChunk(raw: RawSocket): Promise<{ flags: number; type: number; cookie: number; body: Buffer }> {
  const head = await raw.read(20);
  if (head.readUInt32BE(0) !== 0x668e33ef) throw new Error('not a structured reply chunk');
  const body = await raw.read(head.readUInt32BE(16));
  return { flags: head.readUInt16BE(4), type: head.readUInt16BE(6), cookie: Number(head.readBigUInt64BE(8)), body };
}

/** One request frame: magic, flags, type, cookie, offset, length (+ payload). */
export function request(type: number, cookie: number, offset: number, length: number, payload?: Buffer, magic = 0x25609513): Buffer {
  return Buffer.concat([u32(magic), u16(0), u16(type), u64(cookie), u64(offset), u32(length), payload ?? Buffer.alloc(0)]);
}

/** Reads a simple reply: errno and cookie. */
export async function simpleReply(raw: RawSocket): Promise<{ errno: number; cookie: number }> {
  const r = await raw.read(16);
  if (r.readUInt32BE(0) !== 0x67446698) throw new Error('not a simple reply');
  return { errno: r.readUInt32BE(4), cookie: Number(r.readBigUInt64BE(8)) };
}

/** The fixed-newstyle greeting a server sends first: NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE | NO_ZEROES. */
export const GREETING = Buffer.concat([Buffer.from('NBDMAGIC'), IHAVEOPT, u16(3)]);

/** An option reply: magic, the option, reply type, length, body. */
export function optionReply(opt: number, type: number, body: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([Buffer.from('0003e889045565a9', 'hex'), u32(opt), u32(type), u32(body.length), body]);
}

/** An option a scripted server received, and how to answer it (writes an optionReply to it). */
export interface ReceivedOption {
  opt: number;
  data: Buffer;
  reply: (type: number, body?: Buffer) => void;
}

/**
 * The server's side of a fixed-newstyle negotiation: sends GREETING, reads the client flags, then
 * hands each option to `onOption` until it returns true (the way into transmission taken, or the
 * negotiation left for good).
 */
export async function serveOptions(s: net.Socket, raw: RawSocket, onOption: (o: ReceivedOption) => boolean): Promise<void> {
  s.write(GREETING);
  await raw.read(4);
  for (;;) {
    const head = await raw.read(16);
    const opt = head.readUInt32BE(8);
    const data = await raw.read(head.readUInt32BE(12));
    if (onOption({ opt, data, reply: (type, body) => void s.write(optionReply(opt, type, body)) })) return;
  }
}

/** How a fakeServer negotiates. */
export interface FakeServerOptions {
  /** Refuse NBD_OPT_GO with NBD_REP_ERR_UNSUP and take NBD_OPT_EXPORT_NAME instead. */
  exportNameOnly?: boolean;
  /** Accept structured replies and grant `base:allocation` under this context id. */
  structuredContextId?: number;
  /** With `structuredContextId`: grant these contexts too, as [id, name], whatever the client asked. Default none. */
  moreContexts?: Array<[number, string]>;
  /** Keep the server's side open after the client ends its side (a server that never hangs up). */
  allowHalfOpen?: boolean;
  /** Transmission flags announced with the export. Default 1 (NBD_FLAG_HAS_FLAGS only). */
  transmissionFlags?: number;
}

/**
 * A fake fixed-newstyle server: refuses every option but the way in (NBD_OPT_GO, or with
 * `exportNameOnly` NBD_OPT_EXPORT_NAME while GO gets NBD_REP_ERR_UNSUP) and, with
 * `structuredContextId`, NBD_OPT_STRUCTURED_REPLY and NBD_OPT_SET_META_CONTEXT; announces an
 * export of `size` bytes, then hands the socket to `transmission`.
 */
export function fakeServer(size: number, transmission: (s: net.Socket, raw: RawSocket) => Promise<void>, options: FakeServerOptions = {}): net.Server {
  const { exportNameOnly = false, structuredContextId, moreContexts = [], allowHalfOpen = false, transmissionFlags = 1 } = options;
  return net.createServer({ allowHalfOpen }, (s) => {
    s.on('error', () => undefined);
    const raw = new RawSocket(s);
    void (async () => {
      await serveOptions(s, raw, ({ opt, reply }) => {
        if (exportNameOnly && opt === 1) {
          s.write(Buffer.concat([u64(size), u16(transmissionFlags)]));
          return true;
        }
        if (structuredContextId !== undefined && opt === 8) {
          reply(1);
          return false;
        }
        if (structuredContextId !== undefined && opt === 10) {
          reply(4, Buffer.concat([u32(structuredContextId), Buffer.from('base:allocation')]));
          for (const [id, name] of moreContexts) reply(4, Buffer.concat([u32(id), Buffer.from(name)]));
          reply(1);
          return false;
        }
        if (exportNameOnly || opt !== 7) {
          reply(0x80000001);
          return false;
        }
        reply(3, Buffer.concat([u16(0), u64(size), u16(transmissionFlags)]));
        reply(1);
        return true;
      });
      await transmission(s, raw);
    })().catch(() => s.destroy());
  });
}

/** One structured reply chunk: magic, flags, type, cookie (copied from `request`), length, body. */
export function chunk(request: Buffer, flags: number, type: number, body: Buffer): Buffer {
  return Buffer.concat([u32(0x668e33ef), u16(flags), u16(type), request.subarray(8, 16), u32(body.length), body]);
}

/** A simple reply to `request`: magic, `errno`, cookie (copied from `request`); no data. */
export function simpleReplyTo(request: Buffer, errno: number): Buffer {
  return Buffer.concat([u32(0x67446698), u32(errno), request.subarray(8, 16)]);
}

/** An error chunk body: error, message length, message, then (ERROR_OFFSET) the 64-bit offset. */
export function errorBody(errno: number, message: string, offset?: number): Buffer {
  const text = Buffer.from(message);
  return Buffer.concat([u32(errno), u16(text.length), text, offset === undefined ? Buffer.alloc(0) : u64(offset)]);
}

/** An OFFSET_DATA chunk body: offset then data. */
export function offsetData(offset: number, data: Buffer): Buffer {
  return Buffer.concat([u64(offset), data]);
}

/** An OFFSET_HOLE chunk body: offset then length. */
export function offsetHole(offset: number, length: number): Buffer {
  return Buffer.concat([u64(offset), u32(length)]);
}

/** A BLOCK_STATUS chunk body: context id then (length, flags) descriptors. */
export function statusBody(contextId: number, descriptors: Array<[number, number]>): Buffer {
  return Buffer.concat([u32(contextId), ...descriptors.flatMap(([length, flags]) => [u32(length), u32(flags)])]);
}
