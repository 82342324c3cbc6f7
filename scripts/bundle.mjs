/**
 * `node scripts/bundle.mjs`: bundles the `cairn` program (packages/cli/dist/main.js, so run
 * `tsc -b` first; `npm run build` does both) into packages/cli/bundle/cairn.js, which
 * bin/cairn.js runs.
 *
 * Why: Node 20 loads an ES module graph file by file (resolve, stat, read, compile), and the
 * program's graph is about 800 modules (200 of its own): `cairn --version` took 0.59–0.62 s on
 * this project's machine, 0.32–0.36 s bundled, where a bare `node` starts in 0.1 s
 * (docs/performance.md).
 *
 * Contract of a bundle made by `bundleProgram`:
 * - one ES module, `<outdir>/<name>.js`, with the chunk worker beside it as
 *   `<outdir>/chunk-worker.js` (core's chunk-processor looks for the worker next to the module
 *   that contains it);
 * - native addons stay outside (NATIVE) and are required at run time from the bundle's
 *   directory, so the package that ships a bundle depends on them itself;
 * - code is bundled as built by tsc (decorator metadata included), names kept, not minified;
 * - files are replaced whole (written aside, then renamed over), and only when their bytes
 *   change, the worker before the program: a process starting meanwhile loads the old files or
 *   the new ones, never a part (the tests rebuild the bundle while other `cairn` processes may run);
 * - `<outdir>/<name>.stamp.json` names the build-info files of the packages bundled, with their
 *   modification times, so that bin/cairn.js can tell a bundle older than the build (see there).
 */
import { build } from 'esbuild';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Packages with compiled parts: never bundled. */
export const NATIVE = ['zstd-napi', 'lz4-napi', 'fs-ext'];

/**
 * Packages whose `main` is a UMD build that requires its parts through a wrapper esbuild cannot
 * follow (the bundle would fail at run time with "Cannot find module './impl/…'"): bundled from
 * their ES build (`module`) instead. Node itself, running dist unbundled, loads `main` as usual.
 */
const ESM_BUILD = { 'jsonc-parser': 'jsonc-parser/lib/esm/main.js' };
const esmBuilds = {
  name: 'esm-builds',
  setup(b) {
    const names = Object.keys(ESM_BUILD).map((n) => n.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&'));
    b.onResolve({ filter: new RegExp(`^(${names.join('|')})$`) }, (args) => b.resolve(ESM_BUILD[args.path], { kind: args.kind, resolveDir: args.resolveDir }));
  },
};

/** Bundles `entry` to `<outdir>/<name>.js`, and the chunk worker beside it. */
export async function bundleProgram({ entry, outdir, name }) {
  mkdirSync(outdir, { recursive: true });
  const common = {
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: NATIVE,
    keepNames: true,
    logLevel: 'warning',
    write: false,
    metafile: true,
    plugins: [esmBuilds],
    // Bundled CommonJS modules call require(); an ES module has none of its own.
    banner: { js: "import { createRequire as __cairnRequire } from 'node:module'; const require = __cairnRequire(import.meta.url);" },
  };
  const [program, worker] = await Promise.all([
    build({ ...common, entryPoints: [entry], outfile: join(outdir, `${name}.js`) }),
    build({ ...common, entryPoints: [join(root, 'packages/core/dist/repository/chunk-worker.js')], outfile: join(outdir, 'chunk-worker.js') }),
  ]);
  replace(join(outdir, 'chunk-worker.js'), worker.outputFiles[0].contents);
  replace(join(outdir, `${name}.js`), program.outputFiles[0].contents);
  replace(join(outdir, `${name}.stamp.json`), Buffer.from(`${JSON.stringify(stamp(program.metafile, outdir), null, 2)}\n`));
}

/**
 * The build-info files (`dist/.tsbuildinfo`, written by tsc -b) of the packages whose dist the
 * bundle was made from, relative to `outdir`, with their modification times.
 */
function stamp(metafile, outdir) {
  const infos = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const at = resolve(input).lastIndexOf('/dist/');
    if (at < 0 || resolve(input).includes('/node_modules/')) continue;
    const info = join(resolve(input).slice(0, at), 'dist', '.tsbuildinfo');
    if (existsSync(info)) infos.add(info);
  }
  return { builds: [...infos].sort().map((info) => ({ file: relative(outdir, info), mtimeMs: statSync(info).mtimeMs })) };
}

/** Puts `bytes` at `file` by a rename, unless the file already holds exactly them. */
function replace(file, bytes) {
  if (existsSync(file) && Buffer.compare(readFileSync(file), bytes) === 0) return;
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, bytes);
  renameSync(temp, file);
}

/** The `cairn` program's bundle, which bin/cairn.js runs (this script's job, and the tests' set-up). */
export function bundleCairn() {
  return bundleProgram({ entry: join(root, 'packages/cli/dist/main.js'), outdir: join(root, 'packages/cli/bundle'), name: 'cairn' });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await bundleCairn();
