// Child process of server-fd-exhaustion.test.ts: an NbdServer of the built package (argv[3], a
// file URL of dist/index.js) listening on the unix socket argv[2]. It writes JSON lines to fd 1:
// first {added: [[fd, target], …]}, the descriptors listen() opened; then {error} for each report
// to onError. It writes with fs.writeSync only: a process.stdout stream would open a handle (and
// with it libuv's reserve descriptor) before listen().
import { readdirSync, readlinkSync, writeSync } from 'node:fs';

const [socketPath, distUrl] = process.argv.slice(2);
const { NbdServer } = await import(distUrl);

const line = (value) => writeSync(1, `${JSON.stringify(value)}\n`);
const descriptors = () =>
  new Map(
    readdirSync('/proc/self/fd').map((fd) => {
      try {
        return [Number(fd), readlinkSync(`/proc/self/fd/${fd}`)];
      } catch {
        return [Number(fd), '?']; // the directory handle readdirSync used, closed by now
      }
    }),
  );

const before = descriptors();
const server = new NbdServer({
  exports: [{ name: 'x', backend: { size: 1 << 20, read: async (_offset, length) => [{ zero: length }] } }],
  onError: (error) => line({ error }),
});
await server.listen({ path: socketPath });
line({ added: [...descriptors()].filter(([fd, target]) => before.get(fd) !== target) });
setInterval(() => undefined, 1 << 30); // serve until killed
