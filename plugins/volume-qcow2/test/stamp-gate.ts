import type { Qcow2VolumeDriver } from '../src/index.js';

type Put = (r: { kind: string; imageStamp?: { ctimeNs: string } }) => Promise<void>;

/**
 * Holds `d`'s next sidecar write that carries a new image stamp (not `old`, the one saved at
 * create) until `go` is called; `reached` resolves when it starts.
 */
export function gateStampWrite(d: Qcow2VolumeDriver, old: { ctimeNs: string }): { reached: Promise<void>; go: () => void } {
  const store = (d as unknown as { store: { put: Put } }).store;
  const put = store.put.bind(store);
  let reach!: () => void;
  let go!: () => void;
  const reached = new Promise<void>((r) => (reach = r));
  const gate = new Promise<void>((r) => (go = r));
  let armed = true;
  store.put = async (r) => {
    if (armed && r.kind === 'volume' && r.imageStamp && r.imageStamp.ctimeNs !== old.ctimeNs) {
      armed = false;
      reach();
      await gate;
    }
    return put(r);
  };
  return { reached, go };
}
