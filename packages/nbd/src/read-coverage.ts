/**
 * Which bytes of one READ its reply chunks have covered, as a flat list of sorted, disjoint,
 * non-adjacent half-open spans `[start0, end0, start1, end1, …]` relative to the request start.
 * proto.md: the chunks of a successful read cover the request exactly once and MUST NOT overlap.
 *
 * Adds `[start, end)` and returns true, or returns false (recording nothing) when it overlaps a
 * byte already covered. An empty span is a no-op. Chunks arriving in order (the usual case)
 * extend the last span in O(1); others take a scan of the (short) list.
 */
export function addSpan(spans: number[], start: number, end: number): boolean {
  if (start === end) return true;
  const n = spans.length;
  if (n === 0 || spans[n - 1]! <= start) {
    if (n > 0 && spans[n - 1] === start) spans[n - 1] = end;
    else spans.push(start, end);
    return true;
  }
  let i = 0;
  while (spans[i + 1]! <= start) i += 2; // the first span ending after `start` (the last one does)
  if (spans[i]! < end) return false;
  const joinPrev = i > 0 && spans[i - 1] === start;
  const joinNext = spans[i] === end;
  if (joinPrev && joinNext) {
    spans[i - 1] = spans[i + 1]!;
    spans.splice(i, 2);
  } else if (joinPrev) spans[i - 1] = end;
  else if (joinNext) spans[i] = start;
  else spans.splice(i, 0, start, end);
  return true;
}
