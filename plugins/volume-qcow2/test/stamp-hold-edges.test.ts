import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Qcow2VolumeDriver } from '../src/index.js';
import type { DaemonSession } from '../src/daemon-session.js';
import { driverPair, freshDriver, MiB, missingQemu, pattern } from './helpers.js';
import { writeInPlace } from './outside-write.js';
import { runtimeOf, sessionOf, stalledAt } from './stall.js';
import { gateStampWrite } from './stamp-gate.js';

// Edge cases of the hold a driver instance takes on a volume's image right after its daemon closed
// it, to save the image's stamp (Runtime.stampClosed, volume-stamp.ts), with the real daemon.

const G = 64 * 1024;
const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

const sidecarPath = (d: Qcow2VolumeDriver, id: string): string => join(d.directory, 'volumes', `${id}.json`);
const stampIn = async (d: Qcow2VolumeDriver, id: string): Promise<{ ctimeNs: string }> => JSON.parse(await readFile(sidecarPath(d, id), 'utf8')).imageStamp;
const codeOf = (p: Promise<unknown>): Promise<string> => p.then(() => 'resolved', (e: { code?: string }) => String(e.code));

type Execute = (command: string, args?: Record<string, unknown>, options?: object) => Promise<unknown>;

/** Runs `before(command, args)` ahead of each QMP command `session` sends, and `after` once it answered, until the returned undo. */
function aroundCommands(session: DaemonSession, hooks: { before?: Execute; after?: Execute }): () => void {
  const qmp = session.qmp as unknown as { execute: Execute };
  const execute = qmp.execute.bind(qmp);
  qmp.execute = async (command, args, options) => {
    await hooks.before?.(command, args);
    const reply = await execute(command, args, options);
    await hooks.after?.(command, args);
    return reply;
  };
  return () => delete (qmp as { execute?: unknown }).execute;
}

/** The names of the nodes of image holds (holdImage) in the session's daemon. */
async function holdNodes(session: DaemonSession): Promise<string[]> {
  const nodes = (await session.qmp.execute('query-named-block-nodes', { flat: true })) as Array<{ 'node-name': string }>;
  return nodes.map((n) => n['node-name']).filter((n) => n.startsWith('hold'));
}

describe.skipIf(missingQemu.length > 0)('the image hold of a stamp after a close', () => {
  it("another instance's checkpoint made while the hold is taken waits for it instead of failing BUSY", async () => {
    const [a, b] = await driverPair(dirs);
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const att = await a.attach({ kind: 'volume', id: v.id }, 'rw');
      await att.device.write(MiB, pattern(G, 1));
      const gate = gateStampWrite(a, await stampIn(a, v.id));
      const detached = a.detach(att.id);
      await gate.reached; // a's daemon closed the node and holds the image for the stamp's write
      // b's first open is refused by the hold; a then saves its stamp and lets go before b tries again.
      const runtime = runtimeOf(b);
      const open = runtime.openVolume.bind(runtime);
      let refused = 0;
      runtime.openVolume = (id) =>
        open(id).catch(async (err: { code?: string }) => {
          if (err.code === 'BUSY' && refused++ === 0) {
            gate.go();
            await detached;
          }
          throw err;
        });
      const cp = await b.changedBlockTracking.createCheckpoint(v.id);
      expect(refused).toBe(1);
      expect((await a.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([cp.id]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  // qemu runs the release's stalled block-export-del once thawed, and the export's end already
  // frees the image's lock: the hold's nodes left (raw, null, filter) lock nothing. These tests see
  // that the volume's own next call finishes the queued release (no hold node left) instead of
  // leaving it to the retry timer (30 s), so an export still there (a release refused) would not
  // refuse that call.
  it("a hold whose release failed is finished by the volume's own next attach", async () => {
    const d = await freshDriver();
    dirs.push(d.directory);
    try {
      const v = await d.createVolume({ size: 8 * MiB });
      await d.setVolumeMetadata(v.id, { n: '1' }); // starts the daemon
      const session = await sessionOf(d);
      // The hold's release gets no reply: it is queued (retried on a timer 30 s later).
      expect(await stalledAt(session, 'block-export-del', () => d.setVolumeMetadata(v.id, { n: '2' }))).toBe('resolved');
      expect(session.deferred.pending()).toHaveLength(1);
      expect(await holdNodes(session)).toHaveLength(3);
      const att = await d.attach({ kind: 'volume', id: v.id }, 'rw');
      expect(session.deferred.pending()).toHaveLength(0);
      expect(await holdNodes(session)).toEqual([]);
      await d.detach(att.id);
    } finally {
      await d.close();
    }
  });

  it("a hold whose release failed is finished by the volume's own next hold (setVolumeMetadata, deleteVolume)", async () => {
    const d = await freshDriver();
    dirs.push(d.directory);
    try {
      const v = await d.createVolume({ size: 8 * MiB });
      await d.setVolumeMetadata(v.id, { n: '1' });
      const session = await sessionOf(d);
      expect(await stalledAt(session, 'block-export-del', () => d.setVolumeMetadata(v.id, { n: '2' }))).toBe('resolved');
      expect(await holdNodes(session)).toHaveLength(3);
      expect((await d.setVolumeMetadata(v.id, { n: '3' })).metadata).toEqual({ n: '3' });
      expect(await holdNodes(session)).toEqual([]);
      expect(await stalledAt(session, 'block-export-del', () => d.setVolumeMetadata(v.id, { n: '4' }))).toBe('resolved');
      expect(await holdNodes(session)).toHaveLength(3);
      await d.deleteVolume(v.id);
      expect(await holdNodes(session)).toEqual([]);
      expect(await d.listVolumes()).toEqual([]);
    } finally {
      await d.close();
    }
  });

  it('a stamp check that cannot read the sidecar leaves the mismatch to the next open (no stamp saved at the close)', async () => {
    const d = await freshDriver();
    dirs.push(d.directory);
    try {
      const v = await d.createVolume({ size: 8 * MiB });
      const att = await d.attach({ kind: 'volume', id: v.id }, 'rw');
      await att.device.write(2 * MiB, pattern(G, 1));
      const cp = await d.changedBlockTracking.createCheckpoint(v.id);
      await d.detach(att.id); // closed: stamped
      await writeInPlace(`${d.directory}/volumes/${v.id}.qcow2`, 2 * MiB, pattern(G, 5)); // unseen by the bitmap
      // The sidecar is unreadable from the node's open until its close: the stamp check fails.
      const session = await sessionOf(d);
      const sidecar = sidecarPath(d, v.id);
      const saved = await readFile(sidecar);
      let node: string | undefined;
      const undo = aroundCommands(session, {
        after: async (command, args) => {
          if (command === 'blockdev-add' && args?.driver === 'qcow2') {
            node = String(args['node-name']);
            await writeFile(sidecar, '{ damaged');
          }
        },
        before: async (command, args) => {
          if (command === 'blockdev-del' && node !== undefined && args?.['node-name'] === node) await writeFile(sidecar, saved);
        },
      });
      try {
        expect(await codeOf(d.changedBlockTracking.createCheckpoint(v.id))).toBe('CORRUPT');
      } finally {
        undo();
      }
      expect(node).toBeDefined();
      const r = await d.attach({ kind: 'volume', id: v.id }, 'ro');
      await expect(r.device.extents({ kind: 'changed', since: cp.id }, { offset: 0, length: 8 * MiB })).rejects.toMatchObject({ code: 'NOT_FOUND' });
      await d.detach(r.id);
    } finally {
      await d.close();
    }
  });

  it('a daemon that dies while the stamp waits to be saved gets no stamp written', async () => {
    const d = await freshDriver();
    dirs.push(d.directory);
    try {
      const v = await d.createVolume({ size: 8 * MiB });
      const att = await d.attach({ kind: 'volume', id: v.id }, 'rw');
      await att.device.write(MiB, pattern(G, 1));
      const created = await stampIn(d, v.id);
      const session = await sessionOf(d);
      // Once the node is closed, the next read of the sidecar (the stamp's read-modify-write,
      // after its settle wait) happens after the daemon was killed.
      const store = (d as unknown as { store: { volume: (id: string) => Promise<unknown> } }).store;
      const volume = store.volume.bind(store);
      let closed = false;
      let killed = false;
      store.volume = async (id) => {
        if (closed && !killed) {
          killed = true;
          process.kill(session.daemon.pid!, 'SIGKILL');
          await session.daemon.whenExited;
        }
        return volume(id);
      };
      const rw = session.nodeOf(join(d.directory, 'volumes', `${v.id}.qcow2`));
      const undo = aroundCommands(session, { after: async (command, args) => void (closed ||= command === 'blockdev-del' && args?.['node-name'] === rw) });
      try {
        await d.detach(att.id).catch(() => {}); // its outcome after the daemon's death is not what is tested here
      } finally {
        undo();
        delete (store as { volume?: unknown }).volume;
      }
      expect(rw).toBeDefined();
      expect(killed).toBe(true);
      expect((await stampIn(d, v.id)).ctimeNs).toBe(created.ctimeNs);
    } finally {
      await d.close().catch(() => {});
    }
  });
});
