/** Entry point of the `cairn` binary (bin/cairn.js imports this module). */
import { run } from './program.js';

run(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`error [INTERNAL]: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
