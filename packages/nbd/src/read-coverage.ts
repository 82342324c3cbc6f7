/**
 * Which bytes of one READ its reply chunks have taken, as a flat list of sorted, disjoint,
 * non-adjacent half-open spans `[start0, end0, start1, end1, …]` relative to the request start:
 * those covered by content (data and hole) chunks, and those claimed by error offsets (see
 * `claimByte`). proto.md: the content chunks of a successful read cover the request exactly once,
 * and a content chunk MUST NOT overlap any earlier content or error chunk.
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

/**
 * Claims byte `at` for an error offset: a later `addSpan` over it then fails. proto.md: a content
 * chunk MUST NOT overlap an earlier error chunk, while an error offset inside earlier content (the
 * order proto.md asks for when both cover an offset) or at an offset named before (SHOULD NOT) is
 * allowed, so a byte already taken stays as it is. Cost as for `addSpan`.
 */
export function claimByte(spans: number[], at: number): void {
  addSpan(spans, at, at + 1);
}
