import type net from 'node:net';
import { join } from 'node:path';
import { tempDir } from './peers.js';

/**
 * The Unix-socket listeners of one test file's scripted servers: `open()` (in beforeAll) makes a
 * temp directory, `listen(server)` puts a server on a fresh socket path in it and resolves with
 * the path, `track(socket)` keeps a server-side socket to destroy, and `close()` (in afterAll)
 * destroys the tracked sockets, closes the servers and removes the directory.
 */
export class ScriptedServers {
  private dir: { path: string; remove: () => Promise<void> } | undefined;
  private n = 0;
  private readonly servers: net.Server[] = [];
  private readonly sockets: net.Socket[] = [];

  constructor(private readonly prefix: string) {}

  async open(): Promise<void> {
    this.dir = await tempDir(this.prefix);
  }

  track(socket: net.Socket): void {
    this.sockets.push(socket);
  }

  async listen(server: net.Server): Promise<string> {
    this.servers.push(server);
    const path = join(this.dir!.path, `s${++this.n}.sock`);
    await new Promise<void>((resolve) => server.listen(path, resolve));
    return path;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    for (const s of this.servers) s.close();
    await this.dir?.remove();
  }
}
