/** Entry point of the `cairn` binary (bin/cairn.js imports this module). */
import { internalErrorText } from './output/internal-error.js';
import { run } from './program.js';

run(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(internalErrorText(err));
    process.exitCode = 1;
  },
);
