import { rm } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, overlaysIn, tempDir } from './helpers.js';
import { leftovers, sessionOf } from './stall.js';

// A view's backup job can end on its own between deleteSnapshot's `query-block-jobs` and its
// `block-job-cancel` (qemu then answers `Block job '…' not found`, class DeviceNotActive, and sends
// no BLOCK_JOB_CANCELLED). The teardown must count the job as gone, not fail. Here the real daemon's job is cancelled right after qemu answered the
// query, before the driver's own cancel is sent.

let driver: Qcow2VolumeDriver | undefined;

afterAll(async () => {
  await driver?.close().catch(() => {});
  if (driver) await rm(driver.directory, { recursive: true, force: true });
});

describe.skipIf(missingQemu.length > 0)(`a view whose job ended before deleteSnapshot's cancel (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('deleteSnapshot after the job ended between query-block-jobs and block-job-cancel succeeds and leaves nothing in qemu', async () => {
    driver = new Qcow2VolumeDriver({ directory: await tempDir() }); // the default command timeout: nothing here stalls
    const d = driver;
    const v = await d.createVolume({ size: 8 * MiB });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    const snap = await d.createSnapshot(v.id, 'view');
    const session = await sessionOf(d);
    const qmp = session.qmp;

    const execute = qmp.execute.bind(qmp) as (c: string, ...rest: unknown[]) => Promise<unknown>;
    let endedJob: string | undefined;
    (qmp as unknown as { execute: typeof execute }).execute = async (c, ...rest) => {
      const reply = await execute(c, ...rest);
      if (c === 'query-block-jobs' && !endedJob) {
        const [job] = reply as Array<{ device: string }>;
        endedJob = job?.device;
        if (endedJob) {
          const gone = qmp.waitForEvent('BLOCK_JOB_CANCELLED', (e) => e.data.device === endedJob);
          await execute('block-job-cancel', { device: endedJob });
          await gone; // the job is gone before the driver acts on this reply
        }
      }
      return reply;
    };
    try {
      await d.deleteSnapshot(snap.id);
      expect(endedJob, 'the view had no job to end').toBeDefined();
      expect(await d.listSnapshots(v.id)).toEqual([]);
      await d.detach(a.id);
      expect(await leftovers(session)).toEqual([]);
      expect(await overlaysIn(d.directory)).toEqual([]);
    } finally {
      delete (qmp as unknown as { execute?: unknown }).execute; // back to the prototype's
    }
  });
});
