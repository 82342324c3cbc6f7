import { CairnError } from '@cairn/core';
import type { Command } from 'commander';
import { withContext } from '../command-runner.js';
import { volumeJson, volumeText } from '../output/views.js';

/** `key=value` pairs of `set` → metadata. `INVALID_INPUT` without `=` or with an empty key. */
function pairs(items: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const text of items) {
    const i = text.indexOf('=');
    if (i <= 0) throw new CairnError('INVALID_INPUT', `metadata "${text}" is not key=value`, { details: { field: 'metadata', reason: 'not_pair' } });
    out[text.slice(0, i)] = text.slice(i + 1);
  }
  return out;
}

/**
 * `cairn volume metadata <volume> set|unset <key=value…|key…>`, as Cinder's `cinder metadata`:
 * `set` adds or overwrites keys, `unset` removes them (absent keys are no error), through core's
 * BackupManager.updateVolumeMetadata (keys `cairn.*` are Cairn's own: INVALID_INPUT; CONFLICT while
 * a backup or restore works on the volume; NOT_SUPPORTED when the driver cannot). Prints the volume
 * as `volume show` does.
 */
export function registerVolumeMetadataCommand(volume: Command): void {
  volume
    .command('metadata <volume> <action> <items...>')
    .description("change a volume's metadata: set key=value…, or unset key… (as cinder metadata)")
    .action(
      withContext(async (ctx, [ref, action, ...rest]) => {
        const items = rest.flat() as string[];
        if (action !== 'set' && action !== 'unset') throw new CairnError('INVALID_INPUT', `action must be set or unset, got ${JSON.stringify(action)}`, { details: { field: 'action' } });
        const v = await ctx.resolveVolume(ref!);
        const manager = await ctx.manager({ recover: true });
        const view = await manager.updateVolumeMetadata(v.id, action === 'set' ? { set: pairs(items) } : { unset: items });
        ctx.out.result(volumeJson(view), () => volumeText(view));
      }),
    );
}
