/**
 * Worker-thread entry: runs TaskRunner on each message; the bytes live in shared memory. The
 * codec settings come as workerData, or (a pool started before the repository's keys were
 * derived) as the first message, `{ kind: 'configure', settings }`, before any task.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort, workerData } from 'node:worker_threads';
import { TaskRunner, type CodecSettings, type ConfigureRequest, type TaskRequest } from './chunk-tasks.js';

let runner = workerData ? new TaskRunner(workerData as CodecSettings) : undefined;

/**
 * node:crypto allocates a fresh output buffer for every chunk it seals or opens (~1 MiB per
 * batch). Dead, they wait for V8's external-memory trigger (+64 MiB per thread) before they are
 * freed, which measured +60 MiB of peak RSS on 2 workers. A minor GC after each batch frees them
 * at once (the worker's heap is tiny: no measurable time), counted per MiB of input rather than per
 * message so that small batches do not collect more often. Exposing gc this way only adds a
 * function to a new context; where it fails, memory is just reclaimed later.
 */
const collect = ((): ((o: { type: 'minor' }) => void) | undefined => {
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as (o: { type: 'minor' }) => void;
  } catch {
    return undefined;
  }
})();

/** Bytes of crypto output since the last collection; collect at every COLLECT_EVERY. */
const COLLECT_EVERY = 1024 * 1024;
let since = 0;

parentPort!.on('message', (req: TaskRequest | ConfigureRequest) => {
  if (req.kind === 'configure') {
    runner = new TaskRunner(req.settings);
    return;
  }
  parentPort!.postMessage(runner!.run(req));
  since += req.input.length;
  if (since >= COLLECT_EVERY) {
    since = 0;
    collect?.({ type: 'minor' });
  }
});
