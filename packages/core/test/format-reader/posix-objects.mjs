// The objects of a repository kept in a directory by the posix store, read from
// docs/repository-format.md alone ("The posix store's layout"). Imports no Cairn code.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { FormatError } from './format-error.mjs';

/** A last key segment stored under a directory named after its first two characters. */
const SHARDED_NAME = /^[0-9a-f]{16,}$/;
/** A key segment; any other name in the directory (`~tmp-…` files, foreign files) is no object. */
const KEY_SEGMENT = /^[A-Za-z0-9._-]+$/;

/**
 * Read-only access to a repository directory by object key.
 * `get`/`getRange` fail with `NOT_FOUND` for a missing object; `list` returns the keys under a
 * prefix (ending in `/`), sorted, and an empty list for a prefix that holds nothing.
 */
export class PosixObjects {
  /** @param {string} root the repository directory */
  constructor(root) {
    this.root = root;
  }

  /** The file that holds `key`. */
  pathOf(key) {
    const segments = key.split('/');
    const name = segments[segments.length - 1];
    if (SHARDED_NAME.test(name)) segments.splice(segments.length - 1, 0, name.slice(0, 2));
    return path.join(this.root, ...segments);
  }

  async get(key) {
    try {
      return await fs.readFile(this.pathOf(key));
    } catch (err) {
      throw notFoundOr(err, key);
    }
  }

  /** `length` bytes of `key` from `offset`; fewer bytes than asked is `CORRUPT` (the object is short). */
  async getRange(key, offset, length) {
    let handle;
    try {
      handle = await fs.open(this.pathOf(key), 'r');
    } catch (err) {
      throw notFoundOr(err, key);
    }
    try {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buf, 0, length, offset);
      if (bytesRead !== length) throw new FormatError('CORRUPT', `${key}: ${bytesRead} of ${length} bytes at ${offset}`);
      return buf;
    } finally {
      await handle.close();
    }
  }

  async size(key) {
    try {
      return (await fs.stat(this.pathOf(key))).size;
    } catch (err) {
      throw notFoundOr(err, key);
    }
  }

  /**
   * Keys of the objects directly under `prefix` (a directory key ending in `/`): its files with
   * key names, and the files of its two-character shard directories whose names are sharded names
   * beginning with that directory's name.
   */
  async list(prefix) {
    const dir = path.join(this.root, ...prefix.split('/').filter(Boolean));
    const names = [];
    for (const e of await readDir(dir)) {
      if (e.isFile() && KEY_SEGMENT.test(e.name) && !SHARDED_NAME.test(e.name)) names.push(e.name);
      if (e.isDirectory() && /^[0-9a-f]{2}$/.test(e.name)) {
        for (const f of await readDir(path.join(dir, e.name))) {
          if (f.isFile() && SHARDED_NAME.test(f.name) && f.name.startsWith(e.name)) names.push(f.name);
        }
      }
    }
    return names.sort().map((n) => prefix + n);
  }
}

async function readDir(dir) {
  try {
    return await fs.readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (err.code === 'ENOENT') return [];
    throw err;
  }
}

function notFoundOr(err, key) {
  if (err && err.code === 'ENOENT') return new FormatError('NOT_FOUND', `${key}: no such object`, err);
  return err;
}
