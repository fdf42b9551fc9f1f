// STUB of src/stow.js (contract).
export async function stow(baseUrl, part10s, { onProgress } = {}) {
  const sent = []; let i = 0; for await (const p of part10s) { i++; onProgress?.({ done: i }); sent.push(`stub-${i}`); } return { sent, alreadyPresent: [], failed: [] };
}
