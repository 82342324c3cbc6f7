/** The benchmarks' command-line options: `--name value` and bare `--flag`. */
const argv = process.argv.slice(2);

/** The value after `name`, or `fallback` when `name` is absent. */
export const option = (name, fallback) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : fallback;
};

/** Whether the bare flag `name` was given. */
export const flag = (name) => argv.includes(name);
