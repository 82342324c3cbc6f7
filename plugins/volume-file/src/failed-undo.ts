import { CairnError, toCairnError } from '@cairn/core';

/**
 * The error to throw when a step failed with `err` and undoing what it had done then failed with
 * `undoErr`: the step's error stays the one thrown — its code, message and cause as the driver's
 * guard would make them (toCairnError with `context`), its details kept — with
 * `details.undoError` ({ code, message }) saying how the undo failed. Callers branch on what went
 * wrong first; the failed clean-up is only reported.
 */
export function withFailedUndo(err: unknown, undoErr: unknown, driver: string, context: string): CairnError {
  const step = toCairnError(err, driver, context);
  const undo = toCairnError(undoErr, driver);
  const prefix = step.driver ? `[${step.driver}] ` : ''; // the constructor adds it again
  const message = step.message.startsWith(prefix) ? step.message.slice(prefix.length) : step.message;
  return new CairnError(step.code, message, {
    driver: step.driver,
    cause: step.cause ?? err,
    details: { ...step.details, undoError: { code: undo.code, message: undo.message } },
  });
}
