import { CairnError } from '@cairn/core';
import type { Command } from 'commander';
import { withContext } from '../command-runner.js';
import { renderTable } from '../output/table.js';
import { volumeJson, volumeText } from '../output/views.js';

/**
 * `key=value` pairs → metadata, later pairs overwriting earlier ones (`volume metadata set`,
 * `volume create -m`). `INVALID_INPUT` (`details: {field: 'metadata', reason: 'not_pair'}`) for a
 * pair without `=` or with an empty key.
 */
export function metadataPairs(items: readonly string[]): Record<string, string> {
  // A Map, then own data properties: `out['__proto__'] = v` would set the prototype instead,
  // losing a key the rest of Cairn keeps.
  const pairs = new Map<string, string>();
  for (const text of items) {
    const i = text.indexOf('=');
    if (i <= 0) throw new CairnError('INVALID_INPUT', `metadata "${text}" is not key=value`, { details: { field: 'metadata', reason: 'not_pair' } });
    pairs.set(text.slice(0, i), text.slice(i + 1));
  }
  return Object.fromEntries(pairs);
}

/**
 * `cairn volume metadata <volume> show|set|unset [key=value…|key…]`, as Cinder's `cinder metadata`
 * and `cinder metadata-show`: `show` prints the metadata (Cairn's `cairn.*` keys included; JSON
 * `{"metadata": {…}}`, as GET /v1/volumes/:id/metadata), `set` adds or overwrites keys, `unset`
 * removes them (absent keys are no error), through core's BackupManager.updateVolumeMetadata (keys
 * `cairn.*` are Cairn's own: INVALID_INPUT; CONFLICT while a backup or restore works on the volume;
 * NOT_SUPPORTED when the driver cannot), printing the volume as `volume show` does. `set` and
 * `unset` need at least one item, `show` takes none (INVALID_INPUT, `details.field: 'items'`).
 */
export function registerVolumeMetadataCommand(volume: Command): void {
  volume
    .command('metadata <volume> <action> [items...]')
    .description("show a volume's metadata, or change it: set key=value…, unset key… (as cinder metadata)")
    .action(
      withContext(async (ctx, [ref, action, ...rest]) => {
        const items = rest.flat().filter((x) => typeof x === 'string');
        if (action !== 'show' && action !== 'set' && action !== 'unset') {
          throw new CairnError('INVALID_INPUT', `action must be show, set or unset, got ${JSON.stringify(action)}`, { details: { field: 'action' } });
        }
        if (action === 'show' && items.length > 0) throw new CairnError('INVALID_INPUT', 'show takes no keys or pairs', { details: { field: 'items', reason: 'unexpected' } });
        if (action !== 'show' && items.length === 0) throw new CairnError('INVALID_INPUT', `${action} needs at least one ${action === 'set' ? 'key=value pair' : 'key'}`, { details: { field: 'items', reason: 'missing' } });
        const v = await ctx.resolveVolume(ref!);
        if (action === 'show') {
          const { metadata } = await (await ctx.manager()).getVolume(v.id);
          const rows = Object.entries(metadata);
          ctx.out.result({ metadata }, () => renderTable(rows, [{ header: 'KEY', value: ([k]) => k }, { header: 'VALUE', value: ([, x]) => x }]));
          return;
        }
        const manager = await ctx.manager({ recover: true });
        const view = await manager.updateVolumeMetadata(v.id, action === 'set' ? { set: metadataPairs(items) } : { unset: items });
        ctx.out.result(volumeJson(view), () => volumeText(view));
      }),
    );
}
