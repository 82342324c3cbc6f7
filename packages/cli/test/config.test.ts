import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_WORKERS } from '../src/config/schema.js';
import { cairn, cairnJson, MiB, removeDir, tempDir, jsonError } from './helpers.js';

describe('cairn config', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  const good = {
    volumeDrivers: { disks: { plugin: 'file', options: { directory: 'vols' } } },
    targets: { main: { plugin: 'posix', options: { directory: 'repo', repository: { init: true } } } },
  };

  async function withConfig(name: string, body: string) {
    const file = join(cwd, name);
    await writeFile(file, body);
    return file;
  }

  it('a config found through CAIRN_CONFIG places volumes and repository relative to it', async () => {
    const file = await withConfig('a.json', JSON.stringify(good));
    const v = await cairnJson(['volume', 'create', 'x', '--size', '1MiB'], { cwd: '/', env: { CAIRN_CONFIG: file } });
    expect(v.size).toBe(MiB);
    const b = await cairnJson(['backup', 'create', v.id], { cwd: '/', env: { CAIRN_CONFIG: file } });
    expect(b.target).toBe('main');
    const restored = await cairnJson(['backup', 'restore', b.id, '--new'], { cwd: '/', env: { CAIRN_CONFIG: file } });
    expect(restored.backup.target).toBe('main');
    const files = await import('node:fs/promises').then((fs) => fs.readdir(join(cwd, 'repo')));
    expect(files).toContain('config');
  });

  it('a passphrase given as file:<relative path> is read relative to the config file, not the working directory', async () => {
    const dir = join(cwd, 'relative-secret');
    await mkdir(join(dir, 'secrets'), { recursive: true });
    await writeFile(join(dir, 'secrets', 'key'), 'a passphrase beside the config\n');
    const file = join(dir, 'cairn.config.json');
    const encrypted = { ...good, targets: { main: { plugin: 'posix', options: { directory: 'repo', repository: { init: true, passphrase: 'file:secrets/key' } } } } };
    await writeFile(file, JSON.stringify(encrypted));
    // The working directory holds no `secrets/key`: only the config's directory does.
    const stats = await cairnJson(['repo', 'stats'], { cwd: '/', env: { CAIRN_CONFIG: file } });
    expect(stats).toMatchObject({ encrypted: true });
    const viaFlag = await cairnJson(['--config', 'relative-secret/cairn.config.json', 'repo', 'stats'], { cwd });
    expect(viaFlag).toMatchObject({ encrypted: true });
  });

  it('a YAML config given with --config works', async () => {
    const file = await withConfig('b.yaml', 'volumeDrivers:\n  disks:\n    plugin: file\n    options: { directory: yvols }\ntargets:\n  t:\n    plugin: posix\n    options:\n      directory: yrepo\n      repository: { init: true }\n');
    const v = await cairnJson(['--config', file, 'volume', 'create', 'y', '--size', '1MiB'], { cwd });
    expect((await cairnJson(['volume', 'list', '--config', file], { cwd })).map((x: { id: string }) => x.id)).toEqual([v.id]);
  });

  it('--driver picks a volume driver from the config; an unknown one is NOT_FOUND (exit 3)', async () => {
    const two = { ...good, volumeDrivers: { first: { plugin: 'file', options: { directory: 'd1' } }, second: { plugin: 'file', options: { directory: 'd2' } } } };
    const file = await withConfig('two.json', JSON.stringify(two));
    const v = await cairnJson(['--config', file, '--driver', 'second', 'volume', 'create', 'z', '--size', '1MiB'], { cwd });
    expect((await cairnJson(['--config', file, '--driver', 'second', 'volume', 'list'], { cwd })).map((x: { id: string }) => x.id)).toEqual([v.id]);
    expect(await cairnJson(['--config', file, 'volume', 'list'], { cwd })).toEqual([]);
    expect((await cairn(['--config', file, '--driver', 'third', 'volume', 'list'], { cwd })).code).toBe(3);
    // Names are looked up as the config's own keys, not Object.prototype's.
    for (const name of ['constructor', '__proto__']) {
      const driver = await cairn(['--config', file, '--driver', name, 'volume', 'list'], { cwd });
      expect([driver.code, driver.stderr]).toEqual([3, expect.stringContaining(`volume driver ${name} is not in the config`)]);
      const target = await cairn(['--config', file, 'repo', 'stats', '--target', name], { cwd });
      expect([target.code, target.stderr]).toEqual([3, expect.stringContaining(`backup target ${name} is not in the config`)]);
    }
  });

  it('invalid JSON is INVALID_INPUT (exit 2) naming the file', async () => {
    const file = await withConfig('broken.json', '{ "volumeDrivers": ');
    const r = await cairn(['volume', 'list', '--config', file, '--json'], { cwd });
    expect(r.code).toBe(2);
    const err = jsonError(r);
    expect(err.code).toBe('INVALID_INPUT');
    expect(err.message).toContain(file);
  });

  it('an empty config (an init holding its claim, or one killed) is INVALID_INPUT (exit 2) saying it is empty and what to do', async () => {
    const found = join(cwd, 'empty-config');
    await mkdir(found);
    await writeFile(join(found, 'cairn.config.json'), '');
    const cases = [
      { file: join(found, 'cairn.config.json'), args: ['volume', 'list', '--json'], dir: found },
      { file: await withConfig('empty.json', '\n'), args: ['volume', 'list', '--config', join(cwd, 'empty.json'), '--json'], dir: cwd },
      { file: await withConfig('empty.yaml', ''), args: ['volume', 'list', '--config', join(cwd, 'empty.yaml'), '--json'], dir: cwd },
    ];
    for (const c of cases) {
      const r = await cairn(c.args, { cwd: c.dir });
      expect(r.code, c.file).toBe(2);
      const err = jsonError(r);
      expect(err, c.file).toMatchObject({ code: 'INVALID_INPUT', details: { file: c.file } });
      expect(err.message, c.file).toContain('is empty');
      expect(err.message, c.file).toContain('cairn init --force');
    }
  });

  it('an empty cairn.config.json left by a killed init, beside a cairn.config.yaml, is INVALID_INPUT saying to remove it to use the YAML', async () => {
    const dir = join(cwd, 'shadowed-config');
    await mkdir(dir);
    await writeFile(join(dir, 'cairn.config.json'), '');
    await writeFile(join(dir, 'cairn.config.yaml'), 'version: 1\n');
    const r = await cairn(['volume', 'list', '--json'], { cwd: dir });
    expect(r.code).toBe(2);
    expect(jsonError(r)).toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringContaining(`remove it to use ${join(dir, 'cairn.config.yaml')}`),
      details: { file: join(dir, 'cairn.config.json'), shadowed: join(dir, 'cairn.config.yaml') },
    });
  });

  it('malformed YAML is INVALID_INPUT (exit 2) naming the file in the message and details.file, and where: line and column in both', async () => {
    const cases = [
      { name: 'indent.yaml', body: 'volumeDrivers:\n  disks:\n    plugin: file\n   options: { directory: x }\n', line: 4, column: 1 },
      { name: 'dup.yml', body: 'volumeDrivers: {}\ntargets: {}\ntargets: {}\n', line: 3, column: 1 },
      // The parser finds an alias without anchor only while converting, with no place of its own.
      { name: 'alias.yaml', body: 'volumeDrivers:\n  disks: *nope\n', line: 2, column: 10 },
    ];
    for (const c of cases) {
      const file = await withConfig(c.name, c.body);
      const r = await cairn(['volume', 'list', '--config', file, '--json'], { cwd });
      expect(r.code, c.name).toBe(2);
      const err = jsonError(r);
      expect(err, c.name).toMatchObject({ code: 'INVALID_INPUT', details: { file, line: c.line, column: c.column } });
      expect(err.message, c.name).toContain(file);
      expect(err.message, c.name).toContain(`line ${c.line}, column ${c.column}`);
    }
  });

  it('invalid JSON and a missing config file name the file in details.file too', async () => {
    const broken = await withConfig('broken2.json', '{ "targets": ');
    expect(jsonError(await cairn(['volume', 'list', '--config', broken, '--json'], { cwd })).details.file).toBe(broken);
    const missing = join(cwd, 'nowhere.yaml');
    const r = await cairn(['volume', 'list', '--config', missing, '--json'], { cwd });
    expect([r.code, jsonError(r).details.file]).toEqual([3, missing]);
  });

  it('a schema error names the file and the path in it, in text and in JSON details', async () => {
    const bad = { ...good, targets: { main: { plugin: 42, options: {} } }, extra: true };
    const file = await withConfig('schema.json', JSON.stringify(bad));
    const r = await cairn(['backup', 'list', '--config', file, '--json'], { cwd });
    expect(r.code).toBe(2);
    const err = jsonError(r);
    expect(err.details.file).toBe(file);
    expect((err.details.issues as { path: string }[]).map((i) => i.path).sort()).toEqual(['(top level)', 'targets.main.plugin']);
    const text = await cairn(['backup', 'list', '--config', file], { cwd });
    expect(text.stderr).toContain(`${file}: targets.main.plugin:`);
  });

  it('a passphrase written in the config is refused and never printed', async () => {
    const bad = { ...good, targets: { main: { plugin: 'posix', options: { directory: 'r2', repository: { passphrase: 'hunter2-secret' } } } } };
    const file = await withConfig('secret.json', JSON.stringify(bad));
    const r = await cairn(['backup', 'list', '--config', file], { cwd });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('targets.main.options.repository.passphrase');
    expect(r.stderr + r.stdout).not.toContain('hunter2-secret');
  });

  it('defaultTarget naming no target is INVALID_INPUT; an unknown plugin is NOT_FOUND (exit 3)', async () => {
    const f1 = await withConfig('dt.json', JSON.stringify({ ...good, defaultTarget: 'nope' }));
    expect((await cairn(['backup', 'list', '--config', f1], { cwd })).code).toBe(2);
    const f2 = await withConfig('plugin.json', JSON.stringify({ ...good, volumeDrivers: { d: { plugin: 'floppy', options: {} } } }));
    expect((await cairn(['volume', 'list', '--config', f2], { cwd })).code).toBe(3);
  });

  it('default names are own names of the config: "constructor" or "toString" is INVALID_INPUT (exit 2)', async () => {
    for (const [key, name] of [['defaultVolumeDriver', 'constructor'], ['defaultTarget', 'toString']] as const) {
      const f = await withConfig(`proto-${key}.json`, JSON.stringify({ ...good, [key]: name }));
      const r = await cairn(['backup', 'list', '--config', f, '--json'], { cwd });
      expect([r.code, jsonError(r).code], key).toEqual([2, 'INVALID_INPUT']);
    }
  });

  it('a JSON config that sets a key twice in one object is INVALID_INPUT (exit 2) at the second setting, and nothing is made', async () => {
    // JSON.parse would keep the second "targets" and drop the first without a word.
    const dir = await tempDir();
    try {
      const body = '{\n  "volumeDrivers": {"d": {"plugin": "file", "options": {"directory": "vols"}}},\n  "targets": {"a": {"plugin": "posix", "options": {"directory": "repo-a", "repository": {"init": true}}}},\n  "targets": {"b": {"plugin": "posix", "options": {"directory": "repo-b", "repository": {"init": true}}}}\n}\n';
      const file = join(dir, 'twice.json');
      await writeFile(file, body);
      const r = await cairn(['backup', 'list', '--config', file, '--json'], { cwd: dir });
      expect(r.code, r.stderr).toBe(2);
      const err = jsonError(r);
      expect(err).toMatchObject({ code: 'INVALID_INPUT', details: { file, line: 4, column: 3, key: 'targets' } });
      expect(err.message).toContain('line 4, column 3');
      expect((await readdir(dir)).sort()).toEqual(['twice.json']);
      // The same key in two different objects is no duplicate: "disks", "plugin", "options", "directory".
      const fine = await withConfig('same-key-elsewhere.json', JSON.stringify({ ...good, targets: { disks: good.targets.main } }));
      expect((await cairn(['volume', 'list', '--config', fine], { cwd })).code).toBe(0);
    } finally {
      await removeDir(dir);
    }
  });

  it('a YAML syntax error is one line naming the place, without the parser\'s excerpt of the text (docs/cli.md, errors)', async () => {
    const file = await withConfig('twice.yaml', 'version: 1\nversion: 1\n');
    const r = await cairn(['volume', 'list', '--config', file], { cwd });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.split('\n').filter((l) => !l.startsWith('warning:'))).toEqual([`error [INVALID_INPUT]: [config] ${file}: not valid YAML: Map keys must be unique at line 2, column 1`, '']);
    const j = await cairn(['volume', 'list', '--config', file, '--json'], { cwd });
    expect(jsonError(j)).toMatchObject({ details: { file, line: 2, column: 1 } });
    expect(jsonError(j).message).toMatch(/not valid YAML: Map keys must be unique at line 2, column 1$/);
  });

  it('a JSON config that starts with a byte order mark (as Windows editors save it) loads as without one', async () => {
    const file = await withConfig('bom.json', `\uFEFF${JSON.stringify(good, null, 2)}\r\n`);
    const r = await cairn(['volume', 'list', '--config', file, '--json'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toBeInstanceOf(Array);
    // A fault after it is still placed on the line and column an editor shows.
    const broken = await withConfig('bom-broken.json', '\uFEFF{\n  "version" 1\n}\n');
    expect(jsonError(await cairn(['volume', 'list', '--config', broken, '--json'], { cwd })).details).toMatchObject({ line: 2, column: 13 });
  });

  it(`repository.workers above ${MAX_WORKERS} is INVALID_INPUT (exit 2) naming the field, before any thread is started`, async () => {
    // 1000 threads made a backup take 6 GiB and fail with INTERNAL after 45 s.
    const withWorkers = (n: number) => ({ ...good, targets: { main: { plugin: 'posix', options: { directory: 'repo', repository: { init: true, workers: n } } } } });
    const bad = await withConfig('workers-many.json', JSON.stringify(withWorkers(MAX_WORKERS + 1)));
    const r = await cairn(['volume', 'list', '--config', bad, '--json'], { cwd });
    expect(r.code, r.stderr).toBe(2);
    expect(jsonError(r).details.issues).toEqual([{ path: 'targets.main.options.repository.workers', message: `expected at most ${MAX_WORKERS} threads` }]);
    const most = await withConfig('workers-most.json', JSON.stringify(withWorkers(MAX_WORKERS)));
    expect((await cairn(['volume', 'list', '--config', most], { cwd })).code).toBe(0);
  });

  it('backup cancel --wait takes a number of seconds: anything else is a usage error (exit 2) before anything is signalled', async () => {
    const f = await withConfig('wait.json', JSON.stringify(good));
    const r = await cairn(['backup', 'cancel', 'no-such-job', '--wait', 'xyz', '--config', f], { cwd });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('seconds');
  });

  it('a config named by CAIRN_CONFIG that does not exist is NOT_FOUND (exit 3)', async () => {
    const r = await cairn(['volume', 'list'], { cwd, env: { CAIRN_CONFIG: join(cwd, 'missing.json') } });
    expect(r.code).toBe(3);
  });

  it('with no config the embedded defaults put everything under ./.cairn', async () => {
    const dir = await tempDir();
    try {
      await cairnJson(['volume', 'create', 'd', '--size', '1MiB'], { cwd: dir });
      expect(await cairnJson(['backup', 'list'], { cwd: dir })).toEqual([]);
      const fs = await import('node:fs/promises');
      expect((await fs.readdir(join(dir, '.cairn'))).sort()).toEqual(expect.arrayContaining(['repository', 'volumes']));
    } finally {
      await removeDir(dir);
    }
  });
});

describe('cairn init', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  it('init --yes writes cairn.config.json and creates the repository; a second init is ALREADY_EXISTS (exit 4)', async () => {
    const r = await cairnJson(['init', '--yes'], { cwd });
    expect(r).toMatchObject({ config: join(cwd, 'cairn.config.json'), repositoryCreated: true, encrypted: false });
    const config = JSON.parse(await readFile(join(cwd, 'cairn.config.json'), 'utf8'));
    expect(config.targets.posix).toMatchObject({ plugin: 'posix', options: { directory: '.cairn/repository' } });
    expect((await cairn(['init', '--yes'], { cwd })).code).toBe(4);
    expect(await cairnJson(['init', '--yes', '--force'], { cwd })).toMatchObject({ repositoryCreated: false });
  });

  it('init --encrypt --passphrase-env keeps only env:NAME in the config and needs the variable later', async () => {
    const dir = await tempDir();
    const env = { CAIRN_TEST_PW: 'correct horse battery staple' };
    try {
      const r = await cairn(['init', '--yes', '--encrypt', '--passphrase-env', 'CAIRN_TEST_PW', '--json'], { cwd: dir, env });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ encrypted: true });
      const text = await readFile(join(dir, 'cairn.config.json'), 'utf8');
      expect(text).toContain('env:CAIRN_TEST_PW');
      expect(text + r.stdout + r.stderr).not.toContain(env.CAIRN_TEST_PW);
      expect(await cairnJson(['repo', 'stats'], { cwd: dir, env })).toMatchObject({ encrypted: true });
      const without = await cairn(['repo', 'stats', '--json'], { cwd: dir, env: { CAIRN_TEST_PW: undefined } });
      expect(without.code).toBe(3);
      const wrong = await cairn(['repo', 'stats'], { cwd: dir, env: { CAIRN_TEST_PW: 'zebra-9-quartz' } });
      expect(wrong.code).toBe(2);
      expect(wrong.stderr).not.toContain('zebra-9-quartz');
    } finally {
      await removeDir(dir);
    }
  });

  it('init --encrypt with a key file works; --encrypt without a source is INVALID_INPUT (exit 2)', async () => {
    const dir = await tempDir();
    try {
      await writeFile(join(dir, 'key'), 'a key from a file\n');
      const r = await cairnJson(['init', '--yes', '--passphrase-file', 'key'], { cwd: dir });
      expect(r.encrypted).toBe(true);
      expect(await readFile(join(dir, 'cairn.config.json'), 'utf8')).toContain(`file:${join(dir, 'key')}`);
      expect((await cairn(['init', '--yes', '--encrypt', '--force'], { cwd: dir })).code).toBe(2);
    } finally {
      await removeDir(dir);
    }
  });

  it('init without --yes asks for the directories on stdin', async () => {
    const dir = await tempDir();
    try {
      const r = await cairn(['init', '--json'], { cwd: dir, input: 'my-volumes\nmy-repo\nn\n' });
      expect(r.code, r.stderr).toBe(0);
      const config = JSON.parse(await readFile(join(dir, 'cairn.config.json'), 'utf8'));
      expect(config.volumeDrivers.file.options.directory).toBe('my-volumes');
      expect(config.targets.posix.options.directory).toBe('my-repo');
    } finally {
      await removeDir(dir);
    }
  });
});
