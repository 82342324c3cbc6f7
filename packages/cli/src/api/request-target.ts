/**
 * The request target without its fragment (`#` and what follows): a fragment is no part of the
 * path or the query (RFC 3986 §3.5) and a literal `#` can start nothing else (`%23` is a `#` in a
 * path segment or a query value), so the router and the query parser never see it.
 */
export function withoutFragment(target: string): string {
  const hash = target.indexOf('#');
  return hash === -1 ? target : target.slice(0, hash);
}
