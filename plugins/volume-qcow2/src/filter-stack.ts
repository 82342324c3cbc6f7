/**
 * The copy-before-write filters fleecing views inserted above the nodes of ONE daemon session,
 * oldest first per node. Each fleecing job inserts its filter directly above the volume's node,
 * below the filters already there, so new exports of the volume must attach to the oldest filter
 * still present (else the node itself) for their writes to pass through every filter. Kept per
 * session because filter and node names come from the session's counter and repeat in the next
 * one: a stack shared by sessions lets an old session's bookkeeping remove a new one's filter.
 */
export class FilterStack {
  private readonly stacks = new Map<string, string[]>();

  /** The node new exports of `node`'s volume attach to: its oldest filter, else `node` itself. */
  top(node: string): string {
    return this.stacks.get(node)?.[0] ?? node;
  }

  /** Records a filter a view inserted above `node`. */
  push(node: string, filter: string): void {
    this.stacks.set(node, [...(this.stacks.get(node) ?? []), filter]);
  }

  /** Forgets a filter of `node` (its view's job was cancelled). Idempotent. */
  remove(node: string, filter: string): void {
    const rest = (this.stacks.get(node) ?? []).filter((f) => f !== filter);
    if (rest.length) this.stacks.set(node, rest);
    else this.stacks.delete(node);
  }

  /** Forgets every filter of a node that was closed. */
  forget(node: string): void {
    this.stacks.delete(node);
  }
}
