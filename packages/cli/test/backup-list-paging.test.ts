import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, serveApi, tempDir, writeRawImage, type ServedApi } from './helpers.js';

/**
 * Cinder's `limit`, `marker`, `sort` and `name` on `cairn backup list` and `GET /v1/backups`: the
 * real CLI and `cairn serve` over one posix repository and file volumes.
 */
describe('backup list paging, sorting and name filter (Cinder\'s limit, marker, sort, name)', () => {
  let cwd: string;
  let api: ServedApi | undefined;
  /** Every backup, oldest first, as `id name volume`. */
  let all: { id: string; name: string; volume: string }[];

  beforeAll(async () => {
    cwd = await tempDir();
    for (const v of ['a', 'b']) {
      await writeRawImage(join(cwd, `${v}.raw`), 2 * MiB);
      await cairnJson(['volume', 'import', join(cwd, `${v}.raw`), '--name', v], { cwd });
    }
    all = [];
    for (const [volume, name] of [['a', 'daily'], ['b', 'daily'], ['a', 'weekly'], ['a', 'daily'], ['b', 'weekly']] as const) {
      all.push({ id: (await cairnJson(['backup', 'create', volume, '--name', name], { cwd })).id as string, name, volume });
    }
  });
  afterAll(async () => {
    if (api) await api.stop();
    await removeDir(cwd);
  });

  const listIds = async (args: string[]) => ((await cairnJson(['backup', 'list', ...args], { cwd })) as { id: string }[]).map((b) => b.id);

  /** The ids of every page of `cairn backup list <args> --limit <limit>`, following `--marker` with each page's last id. */
  async function cliPages(args: string[], limit: number, flags: string[] = ['--json']): Promise<string[]> {
    const out: string[] = [];
    let marker: string[] = [];
    for (let n = 0; n < 10; n++) {
      const r = await cairn(['backup', 'list', ...args, '--limit', String(limit), ...marker, ...flags], { cwd });
      expect(r.code).toBe(0);
      const page = (JSON.parse(r.stdout) as { id: string }[]).map((b) => b.id);
      out.push(...page);
      const hint = /next page with --marker (\S+)/.exec(r.stderr)?.[1];
      if (hint === undefined) return out;
      expect(page).toHaveLength(limit);
      expect(hint).toBe(page.at(-1));
      marker = ['--marker', hint];
    }
    throw new Error('no last page after 10');
  }

  it('cairn backup list --limit/--marker pages through every backup once, in order, both directions, with several page sizes', async () => {
    const ids = all.map((b) => b.id);
    expect(await listIds([])).toEqual(ids);
    expect(await listIds(['--sort', 'createdAt:desc'])).toEqual([...ids].reverse());
    for (const limit of [1, 2, 3, 5, 6]) {
      expect(await cliPages([], limit)).toEqual(ids);
      expect(await cliPages(['--sort', 'createdAt:desc'], limit)).toEqual([...ids].reverse());
    }
    // Name then (its direction's) creation time: dailies first.
    const byName = [...all.filter((b) => b.name === 'daily'), ...all.filter((b) => b.name === 'weekly')].map((b) => b.id);
    expect(await cliPages(['--sort', 'name'], 2)).toEqual(byName);
  });

  it('--quiet keeps the next-page line (a listing cut short: part of its result), with --json as without; it is then the only line on stderr', async () => {
    const ids = all.map((b) => b.id);
    for (const limit of [1, 2, 5]) {
      expect(await cliPages([], limit, ['--json', '--quiet'])).toEqual(ids);
      expect(await cliPages([], limit, ['--quiet', '--json'])).toEqual(ids);
    }
    const quiet = await cairn(['backup', 'list', '--limit', '2', '--quiet'], { cwd });
    expect(quiet.code).toBe(0);
    // Warnings print with --quiet too (none is expected here, but the bundle's staleness warning may come).
    const lines = (text: string) => text.split('\n').filter((l) => l !== '' && !l.startsWith('warning: '));
    expect(lines(quiet.stderr)).toEqual([`more backups follow: next page with --marker ${all[1]!.id}`]);
    const last = await cairn(['backup', 'list', '--limit', '2', '--marker', all[2]!.id, '--quiet', '--json'], { cwd });
    expect(lines(last.stderr)).toEqual([]);
  });

  it('cairn backup list --name and --volume combine with paging; the table shows the page only', async () => {
    const aDaily = all.filter((b) => b.volume === 'a' && b.name === 'daily').map((b) => b.id);
    expect(await listIds(['--name', 'daily', '--volume', 'a'])).toEqual(aDaily);
    expect(await cliPages(['--name', 'daily', '--volume', 'a'], 1)).toEqual(aDaily);
    expect(await cliPages(['--volume', 'b', '--sort', 'createdAt:desc'], 1)).toEqual(all.filter((b) => b.volume === 'b').map((b) => b.id).reverse());
    expect(await listIds(['--name', 'monthly'])).toEqual([]);
    const table = await cairn(['backup', 'list', '--limit', '2', '--marker', all[0]!.id], { cwd });
    expect(table.code).toBe(0);
    const shown = all.filter((b) => table.stdout.includes(b.id)).map((b) => b.id);
    expect(shown).toEqual([all[1]!.id, all[2]!.id]);
    expect(table.stderr).toContain(`--marker ${all[2]!.id}`);
  });

  it('cairn backup list refuses a bad limit or sort (INVALID_INPUT, exit 2) and an unknown marker (NOT_FOUND, exit 3)', async () => {
    for (const [args, field] of [
      [['--limit', '0'], 'limit'],
      [['--limit', '-2'], 'limit'],
      [['--limit', '2.5'], 'limit'],
      [['--limit', 'ten'], 'limit'],
      [['--limit', '1001'], 'limit'],
      [['--sort', 'colour'], 'sort'],
      [['--sort', 'name:up'], 'sort'],
      [['--sort', 'name,name:desc'], 'sort'],
      [['--sort', ''], 'sort'],
    ] as const) {
      const r = await cairn(['backup', 'list', ...args, '--json'], { cwd });
      expect(r.code, args.join(' ')).toBe(2);
      expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', details: { field } });
      expect(r.stdout).toBe('');
    }
    const r = await cairn(['backup', 'list', '--marker', 'no-such-backup', '--json'], { cwd });
    expect(r.code).toBe(3);
    expect(jsonError(r)).toMatchObject({ code: 'NOT_FOUND', details: { field: 'marker' } });
  });

  it('GET /v1/backups?limit=&marker=&sort=&name= pages the same way, the next page in a Link header; bad input is 400 or 404', async () => {
    api = await serveApi(cwd);
    const get = async (path: string) => {
      const res = await fetch(`${api!.url}${path}`);
      return { status: res.status, link: res.headers.get('link'), json: (await res.json()) as any };
    };
    /** Follows the Link headers from `path`. */
    const follow = async (path: string): Promise<string[]> => {
      const out: string[] = [];
      let next: string | undefined = path;
      while (next !== undefined) {
        const r = await get(next);
        expect(r.status).toBe(200);
        out.push(...(r.json as { id: string }[]).map((b) => b.id));
        next = r.link === null ? undefined : /^<([^>]+)>; rel="next"$/.exec(r.link)![1];
        if (next !== undefined) expect(new URLSearchParams(next.split('?')[1]).get('marker')).toBe(out.at(-1));
        expect(out.length).toBeLessThanOrEqual(all.length);
      }
      return out;
    };
    const ids = all.map((b) => b.id);
    const whole = await get('/v1/backups');
    expect(whole.link).toBeNull();
    expect((whole.json as { id: string }[]).map((b) => b.id)).toEqual(ids);
    for (const limit of [1, 2, 4]) {
      expect(await follow(`/v1/backups?limit=${limit}`)).toEqual(ids);
      expect(await follow(`/v1/backups?limit=${limit}&sort=createdAt:desc`)).toEqual([...ids].reverse());
    }
    expect(await follow('/v1/backups?limit=1&volumeId=a&name=daily')).toEqual(all.filter((b) => b.volume === 'a' && b.name === 'daily').map((b) => b.id));
    expect(await follow('/v1/backups?limit=1&status=available&sort=name:desc')).toEqual([...all.filter((b) => b.name === 'daily'), ...all.filter((b) => b.name === 'weekly')].map((b) => b.id).reverse());
    for (const query of ['limit=0', 'limit=1001', 'limit=x', 'sort=colour', 'sort=name:sideways']) {
      const r = await get(`/v1/backups?${query}`);
      expect(r.status, query).toBe(400);
      expect(r.json.error.code, query).toBe('INVALID_INPUT');
    }
    const unknown = await get('/v1/backups?marker=no-such-backup');
    expect(unknown.status).toBe(404);
    expect(unknown.json.error).toMatchObject({ code: 'NOT_FOUND', details: { field: 'marker' } });
  });
});
