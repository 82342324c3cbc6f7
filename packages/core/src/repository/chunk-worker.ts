/** Worker-thread entry: runs TaskRunner on each message, transferring buffers both ways. */
import { parentPort, workerData } from 'node:worker_threads';
import { TaskRunner, type CodecSettings, type TaskReply, type TaskRequest } from './chunk-tasks.js';

const runner = new TaskRunner(workerData as CodecSettings);

parentPort!.on('message', (req: TaskRequest) => {
  const reply: TaskReply = runner.run(req);
  const transfer: ArrayBuffer[] = [];
  if (reply.kind === 'process') {
    transfer.push(reply.buf);
    if (reply.encoded) transfer.push(reply.encoded);
  } else if (reply.data) {
    transfer.push(reply.data);
  }
  parentPort!.postMessage(reply, transfer);
});
