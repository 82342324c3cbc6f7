/**
 * The phases of an archive export or import, in the order they run, each reporting its own bytes
 * from 0 to its total (the total may grow within a phase, never the done past it):
 *   export: `restore` (the backup into the staging volume; total: the backup's size),
 *           `scan` (the staging volume's allocated chunks read and hashed for the manifest),
 *           `write` (the data entries written to the archive; total: the data bytes);
 *   import: `read` (the archive's data entries checked into the staging volume; total: the
 *           manifest's data bytes), `backup` (the staging volume into the repository; total: the
 *           backup's size).
 */
export type ArchivePhase = 'restore' | 'scan' | 'write' | 'read' | 'backup';

/** Called as the bytes of `phase` advance; cheap, synchronous, never throws. */
export type ArchiveProgress = (done: number, total: number, phase: ArchivePhase) => void;
