import { CairnError } from '@cairn/core';
import type { ApiContext } from './api-context.js';

/**
 * `name` when it is a target of the config, else `NOT_FOUND`. Checked as an own key: a name such
 * as `constructor` or `__proto__` must not reach the context's or the manager's lookup tables.
 */
export function knownTarget(api: ApiContext, name: string): string {
  const targets = api.cli.loaded.config.targets;
  if (!Object.hasOwn(targets, name)) throw new CairnError('NOT_FOUND', `backup target ${name} is not in the config (known: ${Object.keys(targets).join(', ')})`);
  return name;
}
