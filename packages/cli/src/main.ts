/** Entry point of the `cairn` binary (bin/cairn.js imports this module). */
import { internalErrorText } from './output/internal-error.js';
import { watchStdout } from './output/stdout.js';
import { run } from './program.js';

// A failed write to stdout (a closed pipe) must not end the process: from its start, help and
// usage output included (commands report it: reportStdoutFailure).
watchStdout();

run(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(internalErrorText(err));
    process.exitCode = 1;
  },
);
