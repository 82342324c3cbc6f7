import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import * as tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnSpawn, jsonError, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

const DIST = resolve(dirname(fileURLToPath(import.meta.url)), '../dist');

/** Runs `body` (module code with `ctx`, a CliContext of `cwd`, in scope) in a separate process; returns its stdout as JSON. */
function withCtx(cwd: string, body: string): Promise<any> {
  const code = `import { CliContext } from '${DIST}/context.js'; import { Output } from '${DIST}/output/output.js';
const ctx = await CliContext.create({}, new Output({})); const out = await (async () => { ${body} })(); await ctx.close(); process.stdout.write(JSON.stringify(out ?? null));`;
  return new Promise((res, rej) =>
    execFile(process.execPath, ['--input-type=module', '-e', code], { cwd, env: { ...process.env, CAIRN_CONFIG: undefined } }, (err, stdout, stderr) => (err ? rej(new Error(stderr)) : res(JSON.parse(stdout)))),
  );
}

interface Entry {
  name: string;
  data: Buffer;
}
async function readEntries(file: string): Promise<Entry[]> {
  const extract = tar.extract();
  const out: Entry[] = [];
  const done = (async () => {
    for await (const e of extract) {
      const parts: Buffer[] = [];
      for await (const p of e as unknown as AsyncIterable<Buffer>) parts.push(p);
      out.push({ name: e.header.name, data: Buffer.concat(parts) });
    }
  })();
  extract.end(await readFile(file));
  await done;
  return out;
}
/** Writes `entries` as a tar with a fresh SHA256SUMS. */
async function writeEntries(file: string, entries: Entry[]): Promise<void> {
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const body = entries.filter((e) => e.name !== 'SHA256SUMS');
  const list = [...body, { name: 'SHA256SUMS', data: Buffer.from(`${body.map((e) => `${sha(e.data)}  ${e.name}`).join('\n')}\n`) }];
  const pack = tar.pack();
  const done = pipeline(pack, createWriteStream(file));
  for (const e of list) await new Promise<void>((r, j) => pack.entry({ name: e.name, size: e.data.length }, e.data, (err) => (err ? j(err) : r())));
  pack.finalize();
  await done;
}

describe('backup import keeps only exported record fields', () => {
  let cwd: string;
  const run = (args: string[]) => cairn(args, { cwd });

  beforeAll(async () => {
    cwd = await tempDir();
  });
  afterAll(() => removeDir(cwd));

  it('drops checkpointId/owner/failReason, clamps a future createdAt, and the next incremental restores byte-exact', async () => {
    await writeRawImage(join(cwd, 'a.raw'), 4 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
    const full = await cairnJson(['backup', 'create', 'a'], { cwd });
    await cairnJson(['backup', 'export', full.id, '--archive', join(cwd, 'a.tar')], { cwd });
    const entries = await readEntries(join(cwd, 'a.tar'));
    const manifest = JSON.parse(entries[0]!.data.toString());
    const crafted = '11111111-2222-3333-4444-555555555555';
    manifest.record = { ...manifest.record, id: crafted, checkpointId: full.checkpointId ?? 'evil', owner: { host: 'elsewhere', pid: 1 }, failReason: 'x', parentId: full.id, createdAt: '2999-01-01T00:00:00.000Z' };
    await writeEntries(join(cwd, 'evil.tar'), [{ name: entries[0]!.name, data: Buffer.from(JSON.stringify(manifest)) }, ...entries.slice(1)]);
    const before = Date.now();
    const imported = await cairnJson(['backup', 'import', join(cwd, 'evil.tar')], { cwd });
    expect(imported).toMatchObject({ id: crafted, status: 'available', incremental: false });
    const stored = await withCtx(cwd, `return (await ctx.catalog()).getBackup('${crafted}');`);
    expect(stored.checkpointId).toBeUndefined();
    expect(stored.owner).toBeUndefined();
    expect(stored.failReason).toBeUndefined();
    expect(stored.parentId).toBeUndefined();
    expect(Date.parse(stored.createdAt)).toBeLessThanOrEqual(Date.now());
    expect(Date.parse(stored.createdAt)).toBeGreaterThanOrEqual(before - 1000);

    // Change the volume; the next incremental must capture the change whatever parent it picks.
    const changed = await readFile(join(cwd, 'a.raw'));
    changed.fill(0x5a, MiB, MiB + 128 * 1024);
    await writeFile(join(cwd, 'b.raw'), changed);
    await cairnJson(['volume', 'import', join(cwd, 'b.raw'), '--into', 'a'], { cwd });
    const inc = await cairnJson(['backup', 'create', 'a', '--incremental'], { cwd });
    const restored = await cairnJson(['backup', 'restore', inc.id, '--new'], { cwd });
    await cairnJson(['volume', 'export', restored.volume.id, join(cwd, 'r.raw')], { cwd });
    expect((await readFile(join(cwd, 'r.raw'))).equals(changed)).toBe(true);
  });

  /**
   * A fresh volume `name` (1 MiB) backed up and exported to `<name>.tar`: that archive's entries,
   * its manifest parsed, and the ids of the backups listed now (to show a refused import wrote nothing).
   */
  async function archivedFresh(name: string): Promise<{ entries: Awaited<ReturnType<typeof readEntries>>; manifest: any; ids: string[] }> {
    await writeRawImage(join(cwd, `${name}.raw`), 1 * MiB);
    await cairnJson(['volume', 'import', join(cwd, `${name}.raw`), '--name', name], { cwd });
    const b = await cairnJson(['backup', 'create', name], { cwd });
    await cairnJson(['backup', 'export', b.id, '--archive', join(cwd, `${name}.tar`)], { cwd });
    const entries = await readEntries(join(cwd, `${name}.tar`));
    const ids = (await cairnJson(['backup', 'list'], { cwd })).map((x: { id: string }) => x.id);
    return { entries, manifest: JSON.parse(entries[0]!.data.toString()), ids };
  }

  it('an archive whose record has a name, volume name or description breaking the label rules is INVALID_INPUT (exit 2) naming the field, and writes nothing', async () => {
    const { entries, manifest, ids } = await archivedFresh('n');
    for (const [field, value] of [
      ['name', 'two\nlines'],
      ['volumeName', 'v'.repeat(256)],
      ['description', 'escape \u001b[31m'],
    ] as const) {
      const crafted = { ...manifest, record: { ...manifest.record, id: '99999999-2222-3333-4444-555555555555', [field]: value } };
      await writeEntries(join(cwd, 'bad.tar'), [{ name: entries[0]!.name, data: Buffer.from(JSON.stringify(crafted)) }, ...entries.slice(1)]);
      const r = await run(['backup', 'import', join(cwd, 'bad.tar'), '--json']);
      expect(r.code, `${field}: ${r.stderr}`).toBe(2);
      expect(JSON.parse(r.stderr).error).toMatchObject({ code: 'INVALID_INPUT', details: { field } });
    }
    expect((await cairnJson(['backup', 'list'], { cwd })).map((x: { id: string }) => x.id)).toEqual(ids);
  });

  it('an archive whose record has a volume id that is not an id (empty, path-like, over 127 bytes: the most the catalog keys) is INVALID_INPUT (exit 2) naming volumeId, and writes nothing', async () => {
    const { entries, manifest, ids } = await archivedFresh('vid');
    for (const volumeId of ['', '../../etc', 'v'.repeat(128), 'v'.repeat(200), 'v'.repeat(201)]) {
      const crafted = { ...manifest, record: { ...manifest.record, id: '88888888-2222-3333-4444-555555555555', volumeId } };
      await writeEntries(join(cwd, 'bad-vid.tar'), [{ name: entries[0]!.name, data: Buffer.from(JSON.stringify(crafted)) }, ...entries.slice(1)]);
      const r = await run(['backup', 'import', join(cwd, 'bad-vid.tar'), '--json']);
      expect(r.code, `${JSON.stringify(volumeId)}: ${r.stderr}`).toBe(2);
      expect(JSON.parse(r.stderr).error).toMatchObject({ code: 'INVALID_INPUT', details: { field: 'volumeId' } });
    }
    expect((await cairnJson(['backup', 'list'], { cwd })).map((x: { id: string }) => x.id)).toEqual(ids);
  });

  it("an archive whose record id starts with '-' (which the REST API's paths refuse and the CLI reads as an option) is INVALID_INPUT (exit 2), and writes nothing", async () => {
    const { entries, manifest, ids } = await archivedFresh('dash');
    const crafted = { ...manifest, record: { ...manifest.record, id: '-7777777-2222-3333-4444-555555555555' } };
    await writeEntries(join(cwd, 'bad-id.tar'), [{ name: entries[0]!.name, data: Buffer.from(JSON.stringify(crafted)) }, ...entries.slice(1)]);
    const r = await run(['backup', 'import', join(cwd, 'bad-id.tar'), '--json']);
    expect(r.code, r.stderr).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('record.id') });
    expect((await cairnJson(['backup', 'list'], { cwd })).map((x: { id: string }) => x.id)).toEqual(ids);
  });

  it("another process's recovery leaves a running import alone (its creating record has an owner)", async () => {
    await writeRawImage(join(cwd, 'big.raw'), 192 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'big.raw'), '--name', 'big'], { cwd });
    const b = await cairnJson(['backup', 'create', 'big'], { cwd });
    await cairnJson(['backup', 'export', b.id, '--archive', join(cwd, 'big.tar')], { cwd });
    await cairnJson(['backup', 'delete', b.id], { cwd });
    const imp = cairnSpawn(['backup', 'import', join(cwd, 'big.tar'), '--json'], { cwd });
    try {
      const seen = await withCtx(
        cwd,
        `const cat = await ctx.catalog();
         for (let i = 0; i < 3000; i++) {
           const r = await cat.getBackup('${b.id}').catch(() => undefined);
           if (r && r.status === 'creating') break;
           if (r && r.status !== 'creating') return { missed: r.status };
           await new Promise((w) => setTimeout(w, 10));
         }
         const m = await ctx.manager({ recover: true });
         return (await m.getBackup('${b.id}')).status;`,
      );
      expect(seen).toBe('creating');
    } finally {
      const r = await imp.exit;
      expect(r.code, r.stderr).toBe(0);
    }
  });
});
