/** A progress report, in bytes of the volume (logical), not bytes moved on the wire. */
export interface ProgressEvent {
  /** Job or backup id the event belongs to. */
  id: string;
  phase: 'backup' | 'restore' | 'verify';
  /** Logical bytes processed so far (monotonic). */
  bytesDone: number;
  /** Logical bytes the job will process in all. */
  bytesTotal: number;
}

/** Receives progress. Must not throw and must return quickly. */
export type ProgressSink = (done: number, total: number) => void;
