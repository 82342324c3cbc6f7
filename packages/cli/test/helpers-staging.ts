// Test helpers: forged owners and staging directories, as a killed or a live process leaves them.
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { currentOwner, processStartTime, type ProcessOwner } from '@cairn/core';

/** The owner of a process started here and then SIGKILLed and reaped: certainly dead. */
export async function deadOwner(): Promise<ProcessOwner> {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
  await new Promise((r) => child.once('spawn', r));
  const owner = { ...currentOwner(), pid: child.pid!, startTime: processStartTime(child.pid!) };
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  return owner;
}

/**
 * Makes directory `dir` with the owner file (`cairn-staging.json`) a staging or partial directory
 * of `owner` holds, written by hand in the cairn-staging/1 format; a string is written as the
 * file's content instead (a damaged or foreign owner file).
 */
export async function forgeStagingDir(dir: string, owner: ProcessOwner | string): Promise<void> {
  await mkdir(dir);
  const doc = typeof owner === 'string' ? owner : JSON.stringify({ format: 'cairn-staging/1', owner, createdAt: new Date().toISOString() });
  await writeFile(join(dir, 'cairn-staging.json'), doc);
}
