// Test helper: an NbdServer serving one in-memory export on a unix socket in its own temp dir.
import { join } from 'node:path';
import { NbdServer } from '../../src/index.js';
import { tempDir } from './peers.js';

/** A listening server: its socket path, and close() that closes the server and removes its dir. */
export interface SocketServer {
  path: string;
  close(): Promise<void>;
}

/**
 * Listens with one read-only export `e` of `size` bytes, every byte `fill`, on `s.sock` in a fresh
 * tempDir(`prefix`).
 */
export async function serveOnSocket(prefix: string, size: number, fill = 0): Promise<SocketServer> {
  const dir = await tempDir(prefix);
  const server = new NbdServer({ exports: [{ name: 'e', backend: { size, read: async (_o: number, l: number) => Buffer.alloc(l, fill) } }] });
  const path = join(dir.path, 's.sock');
  try {
    await server.listen({ path });
  } catch (e) {
    await dir.remove();
    throw e;
  }
  return {
    path,
    close: async () => {
      await server.close();
      await dir.remove();
    },
  };
}
