// Child process of server-status-heap.test.ts, run with --expose-gc: an NbdServer of the built
// package (argv[2], a file URL of dist/index.js) on a unix socket in argv[3], and a raw client in
// the same process that selects base:allocation and a dirty bitmap, then sends REQUESTS
// BLOCK_STATUS requests of 1 MiB. The backend answers base:allocation with 65,546 one-byte
// descriptors (the server takes 65,536) and holds every dirty-bitmap lookup until all REQUESTS
// are waiting in it, so each request has its base:allocation answer built and held. Then the
// heap and ArrayBuffer growth since before the requests (after gc) go to fd 1 as one JSON line.
import net from 'node:net';
import { join } from 'node:path';
import { writeSync } from 'node:fs';

const [distUrl, dir] = process.argv.slice(2);
const { NbdServer } = await import(distUrl);
const REQUESTS = 32;
const DESCRIPTORS = 65536 + 10;

let waiting = 0;
let release;
const gate = new Promise((resolve) => (release = resolve));
let allWaiting;
const everyoneIn = new Promise((resolve) => (allWaiting = resolve));
const backend = {
  size: 1 << 30,
  metaContexts: ['qemu:dirty-bitmap:a'],
  read: async (o, len) => Buffer.alloc(len),
  async blockStatus(context, offset, length) {
    if (context === 'base:allocation') return Array.from({ length: Math.min(DESCRIPTORS, length) }, (_, i) => ({ length: 1, flags: i & 1 }));
    if (++waiting === REQUESTS) allWaiting();
    await gate;
    return [{ length, flags: 0 }];
  },
};
const server = new NbdServer({ exports: [{ name: 'x', backend }] });
const path = join(dir, 'heap.sock');
await server.listen({ path });

const socket = net.connect(path);
const chunks = [];
let have = 0;
let wake;
socket.on('data', (d) => {
  chunks.push(d);
  have += d.length;
  wake?.();
});
const read = async (n) => {
  while (have < n) await new Promise((resolve) => (wake = resolve));
  const all = Buffer.concat(chunks);
  chunks.length = 0;
  chunks.push(all.subarray(n));
  have -= n;
  return all.subarray(0, n);
};
const u32 = (v) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};
const option = async (opt, data) => {
  socket.write(Buffer.concat([Buffer.from('IHAVEOPT'), u32(opt), u32(data.length), data]));
  for (;;) {
    const head = await read(20);
    await read(head.readUInt32BE(16));
    const type = head.readUInt32BE(12);
    if (type === 1) return;
    if (type >= 0x80000000) throw new Error(`option ${opt} refused: ${type}`);
  }
};
await read(18);
socket.write(u32(3)); // FIXED_NEWSTYLE | NO_ZEROES
await option(8, Buffer.alloc(0)); // NBD_OPT_STRUCTURED_REPLY
const queries = ['base:allocation', 'qemu:dirty-bitmap:a'].map((q) => Buffer.from(q));
await option(10, Buffer.concat([u32(1), Buffer.from('x'), u32(queries.length), ...queries.flatMap((q) => [u32(q.length), q])])); // SET_META_CONTEXT
await option(7, Buffer.concat([u32(1), Buffer.from('x'), Buffer.alloc(2)])); // GO

global.gc();
global.gc();
const before = process.memoryUsage();
for (let i = 0; i < REQUESTS; i++) {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(0x25609513, 0);
  h.writeUInt16BE(7, 6); // NBD_CMD_BLOCK_STATUS
  h.writeBigUInt64BE(BigInt(i), 8);
  h.writeBigUInt64BE(BigInt(i) * 1048576n, 16);
  h.writeUInt32BE(1048576, 24);
  socket.write(h);
}
await everyoneIn;
global.gc();
global.gc();
const during = process.memoryUsage();
writeSync(1, `${JSON.stringify({ waiting, heapUsed: during.heapUsed - before.heapUsed, arrayBuffers: during.arrayBuffers - before.arrayBuffers })}\n`);
release();
socket.destroy();
await server.close({ drainTimeoutMs: 1000 });
