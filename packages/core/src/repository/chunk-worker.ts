/** Worker-thread entry: runs TaskRunner on each message; the bytes live in shared memory. */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort, workerData } from 'node:worker_threads';
import { TaskRunner, type CodecSettings, type TaskRequest } from './chunk-tasks.js';

const runner = new TaskRunner(workerData as CodecSettings);

/**
 * node:crypto allocates a fresh output buffer for every chunk it seals or opens (~1 MiB per
 * batch). Dead, they wait for V8's external-memory trigger (+64 MiB per thread) before they are
 * freed, which measured +60 MiB of peak RSS on 2 workers. A minor GC after each batch frees them
 * at once (the worker's heap is tiny: no measurable time). Exposing gc this way only adds a
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

parentPort!.on('message', (req: TaskRequest) => {
  parentPort!.postMessage(runner.run(req));
  collect?.({ type: 'minor' });
});
