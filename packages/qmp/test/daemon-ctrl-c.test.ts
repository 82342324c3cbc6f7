import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { processAlive } from '../src/runtime-dirs.js';

// A terminal's Ctrl-C sends SIGINT to every process of its foreground process group. The cairn CLI
// handles SIGINT to cancel a job cleanly, which needs QMP (remove a fleecing view, stop the
// daemon with `quit`); a daemon in the caller's group got the SIGINT too and quit on its own,
// so that cancel found no daemon to talk to.
const fixture = fileURLToPath(new URL('./fixtures/ctrl-c-caller.mjs', import.meta.url));

describe("the daemon and a terminal's Ctrl-C", () => {
  it('SIGINT to the caller\'s whole process group reaches the caller only: its handler still gets QMP answers, then stops the daemon', { timeout: 20_000 }, async () => {
    // A group of its own, as a shell gives a foreground job.
    const caller = spawn(process.execPath, [fixture], { detached: true, stdio: ['ignore', 'pipe', 'inherit'] });
    const lines: Record<string, unknown>[] = [];
    let daemonPid: number | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        let buffered = '';
        caller.stdout.on('data', (b: Buffer) => {
          buffered += String(b);
          for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
            lines.push(JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>);
            buffered = buffered.slice(nl + 1);
            if (lines.length === 1) {
              daemonPid = lines[0]!.pid as number;
              process.kill(-caller.pid!, 'SIGINT'); // what the terminal does on Ctrl-C
            }
          }
        });
        caller.once('exit', () => resolve());
        caller.once('error', reject);
      });
      expect(lines[1]).toEqual({ answered: expect.any(Number), exit: { code: 0, signal: null } });
      expect(processAlive(daemonPid!)).toBe(false);
    } finally {
      if (daemonPid !== undefined && processAlive(daemonPid)) process.kill(daemonPid, 'SIGKILL');
      caller.kill('SIGKILL');
    }
  });
});
