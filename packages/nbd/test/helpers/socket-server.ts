// Test helper: an NbdServer serving in-memory exports on a unix socket in its own temp dir.
import { join } from 'node:path';
import { NbdServer } from '../../src/index.js';
import { tempDir } from './peers.js';

/** A listening server: its socket path, and close() that closes the server and removes its dir. */
export interface SocketServer {
  path: string;
  close(): Promise<void>;
}

/**
 * Listens with read-only exports named `names` (default one, `e`), each of `size` bytes, every byte
 * `fill`, on `s.sock` in a fresh tempDir(`prefix`).
 */
export async function serveOnSocket(prefix: string, size: number, fill = 0, names: string[] = ['e']): Promise<SocketServer> {
  const dir = await tempDir(prefix);
  const backend = { size, read: async (_o: number, l: number) => Buffer.alloc(l, fill) };
  const server = new NbdServer({ exports: names.map((name) => ({ name, backend })) });
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
