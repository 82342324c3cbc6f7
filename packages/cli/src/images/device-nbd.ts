import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toCairnError, type BlockDevice, type CairnError } from '@cairn/core';
import { blockDeviceBackend, fitsUnixSocketPath, nbdUri, NbdServer, type NbdBackend } from '@cairn/nbd';
import { createOwnedTempDir, type OwnedTempPrefix } from '../io/owned-temp-dir.js';

const DRIVER = 'image-nbd';
/** The socket's name in the directory given to serveDeviceToQemu. */
const SOCKET_NAME = 'nbd.sock';
/** Where the socket's directory goes when the system temporary directory is too deep for it. */
const SHORT_TMP = '/tmp';

/**
 * Makes the private directory for a unix socket named `socketName` (default: serveDeviceToQemu's
 * `nbd.sock`): an owned temporary directory (createOwnedTempDir, `<parent>/<prefix>XXXXXX`, mode
 * 0700) in the system temporary directory (`$TMPDIR`), or in `/tmp` when a socket path there would
 * not fit a unix socket path (107 bytes: a deep `$TMPDIR`); the socket holds no data, so the place
 * costs no space. The caller removes it (removeOwnedTempDir).
 */
export async function createSocketDir(prefix: OwnedTempPrefix, socketName: string = SOCKET_NAME): Promise<string> {
  const fits = fitsUnixSocketPath(join(tmpdir(), `${prefix}XXXXXX`, socketName));
  return createOwnedTempDir(prefix, fits ? tmpdir() : SHORT_TMP);
}

/** A volume's device served to one qemu-img run (serveDeviceToQemu). */
export interface DeviceNbdExport {
  /** `nbd+unix:///<export>?socket=<path>`, for qemu-img with `-f raw` / `-O raw`. */
  readonly uri: string;
  /** Bytes of data (not holes or zeros) served by READs so far. */
  readonly dataBytesRead: number;
  /**
   * The first error the device gave while serving (a full disk, dead storage…), or undefined. The
   * client only sees it as an NBD errno (EIO); the caller reports this one instead of qemu-img's.
   */
  readonly failure: CairnError | undefined;
  /** Stops serving: the connection is answered and closed, the socket removed. Idempotent. */
  close(): Promise<void>;
}

/**
 * Serves `device` as the only export of an NbdServer of @cairn/nbd (blockDeviceBackend: holes and
 * zeros reported by block status, so qemu-img reads and writes only data) on the unix socket
 * `<dir>/nbd.sock`, owner-only from the moment it exists (PrivateSocketPath). `dir` is a private
 * directory of the caller (createSocketDir), whose removal is the caller's.
 * `progress(end)` is told the end offset of each request served (reads, block status, writes and
 * zeroing), for a progress report of a client that goes front to back. A path too long for a unix
 * socket is `INVALID_INPUT` (see PrivateSocketPath); nothing is left listening on any failure.
 */
export async function serveDeviceToQemu(device: BlockDevice, dir: string, progress?: (end: number) => void): Promise<DeviceNbdExport> {
  const inner = blockDeviceBackend(device);
  let failure: CairnError | undefined;
  let dataBytesRead = 0;
  /** Runs a device call, remembering its first error (the NBD reply carries only an errno); `end` of its result goes to `progress`. */
  const watched = async <T>(call: () => Promise<T>, end?: (out: T) => number): Promise<T> => {
    try {
      const out = await call();
      if (end) progress?.(end(out));
      return out;
    } catch (err) {
      const e = toCairnError(err, device.driverName ?? DRIVER, 'serve');
      if (e.code !== 'CANCELLED') failure ??= e; // a call ended because the client left is not the device's failure
      throw err;
    }
  };
  const backend: NbdBackend = {
    size: inner.size,
    readOnly: inner.readOnly,
    read: (offset, length, options) =>
      watched(async () => {
        const runs = await inner.read(offset, length, options);
        for (const r of Array.isArray(runs) ? runs : [runs]) if (Buffer.isBuffer(r)) dataBytesRead += r.length;
        return runs;
      }, () => offset + length),
    blockStatus: (context, offset, length, options) =>
      watched(() => inner.blockStatus!(context, offset, length, options), (d) => offset + (d ?? []).reduce((n, x) => n + x.length, 0)),
  };
  if (inner.write) {
    const { write, writeZeroes, flush } = inner;
    backend.write = (offset, data, o) => watched(() => write(offset, data, o), () => offset + data.length);
    backend.writeZeroes = (offset, length, o) => watched(() => writeZeroes!(offset, length, o), () => offset + length);
    backend.flush = () => watched(() => flush!());
  }
  // One client, qemu-img; no idle timeout: the server lives as long as that one run, which is
  // bounded itself (its stall window), and a pause of qemu-img writing its output is no hang here.
  const name = 'volume';
  const server = new NbdServer({ exports: [{ name, backend }], maxConnections: 1, idleTimeoutMs: 0, driver: DRIVER });
  try {
    const address = await server.listen({ path: join(dir, SOCKET_NAME) });
    return {
      uri: nbdUri(address, name),
      get dataBytesRead() {
        return dataBytesRead;
      },
      get failure() {
        return failure;
      },
      close: () => server.close(),
    };
  } catch (err) {
    await server.close();
    throw err;
  }
}
