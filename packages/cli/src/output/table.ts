import { shownText } from './terminal-text.js';

/** A column of a human table: its heading and how to render a row's cell. */
export interface Column<T> {
  header: string;
  value: (row: T) => string | number | boolean | undefined;
  /** Right-align (numbers). Default false. */
  right?: boolean;
}

/**
 * Renders rows as a plain-text table with a header line, columns separated by two spaces.
 * Empty input gives the header alone. Cells are shown through shownText (a name or metadata
 * value cannot break its row or move the cursor). Pure: returns the text, prints nothing.
 */
export function renderTable<T>(rows: readonly T[], columns: readonly Column<T>[]): string {
  const cells = rows.map((r) => columns.map((c) => cellText(c.value(r))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i]!.length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => (columns[i]!.right ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n');
}

/** Renders one object as `key: value` lines, keys aligned, values shown through shownText. */
export function renderFields(fields: [string, string | number | boolean | undefined][]): string {
  const width = Math.max(...fields.map(([k]) => k.length));
  return fields.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${cellText(v)}`).join('\n');
}

function cellText(v: string | number | boolean | undefined): string {
  return v === undefined || v === '' ? '-' : shownText(String(v));
}
