// The full tag dump of the shown image (dicom.js tags()), filtered as the user types.
export function showTags(dialog, table, filter, file) {
  const rows = file.tags();
  const body = table.tBodies[0];
  const fill = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = rows.filter((r) => !q || `${r.tag} ${r.name} ${r.value}`.toLowerCase().includes(q)).slice(0, 5000);
    body.replaceChildren(...shown.map((r) => {
      const tr = document.createElement('tr');
      const tag = String(r.tag).replace(/^x/, '').toUpperCase();
      for (const [i, v] of [`${'> '.repeat(r.depth || 0)}(${tag.slice(0, 4)},${tag.slice(4, 8)})`, r.vr, r.name, r.value].entries()) {
        const td = document.createElement('td');
        td.textContent = v === undefined || v === null ? '' : String(v);
        if (i === 3) td.className = 'value';
        tr.append(td);
      }
      return tr;
    }));
  };
  filter.value = '';
  filter.oninput = fill;
  fill();
  dialog.showModal();
}
