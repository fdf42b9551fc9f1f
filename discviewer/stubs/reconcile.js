// STUB of src/reconcile.js (contract): returns the file unchanged.
export function reconcilePart10(part10) { return part10; }
