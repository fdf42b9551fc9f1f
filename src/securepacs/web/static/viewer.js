// securepacs viewer: scroll a series, window/level by drag or CT presets, zoom and pan.
// Every frame is rendered to PNG by the server (/render/SERIES/INDEX/FRAME?wc=&ww=).
"use strict";
(function () {  // the import form: show the chosen media patient beside the new identity
  const from = document.getElementById("from");
  if (!from) return;
  from.addEventListener("change", () => {
    const o = from.selectedOptions[0];
    document.getElementById("old-id").textContent = o.value;
    document.getElementById("old-issuer").textContent = o.dataset.issuer;
    document.getElementById("old-name").textContent = o.dataset.name;
    document.getElementById("old-birth").textContent = o.dataset.birth;
  });
})();
(function () {
  const root = document.getElementById("viewer");
  if (!root) return;
  const uid = root.dataset.series;
  const img = document.getElementById("image"), stage = document.getElementById("stage");
  const slider = document.getElementById("slider"), errorBox = document.getElementById("image-error");
  const st = { slices: [], instances: [], idx: 0, wc: null, ww: null, zoom: 1, x: 0, y: 0,
               busy: false, again: false, url: null };
  const text = (id, value) => { document.getElementById(id).textContent = value; };

  function place() {
    img.style.transform = `translate(${st.x}px, ${st.y}px) scale(${st.zoom})`;
  }
  function tags(inst) {
    const table = document.getElementById("tags");
    table.replaceChildren();
    for (const [k, v] of Object.entries(inst.tags)) {
      const row = table.insertRow(), a = row.insertCell(), b = row.insertCell();
      a.textContent = k; b.textContent = v;
    }
  }
  async function show() {
    if (st.busy) { st.again = true; return; }
    st.busy = true;
    try {
      do {
        st.again = false;
        const s = st.slices[st.idx], inst = st.instances[s.i];
        let q = "";
        if (st.wc !== null) q = `?wc=${st.wc}&ww=${st.ww}`;
        const r = await fetch(`render/${encodeURIComponent(uid)}/${s.i}/${s.f}${q}`);
        text("position", `${st.idx + 1} / ${st.slices.length}` +
             (inst.frames > 1 ? ` (frame ${s.f + 1} of ${inst.frames})` : ""));
        text("instance-number", inst.tags.InstanceNumber || "-");
        tags(inst);
        if (!r.ok) {
          errorBox.textContent = await r.text(); errorBox.hidden = false;
          img.removeAttribute("src"); continue;
        }
        errorBox.hidden = true;
        const w = r.headers.get("X-Window");
        if (w) { const [c, ww] = w.split(",").map(Number); st.wc = c; st.ww = ww;
                 text("window", `W ${Math.round(st.ww)} L ${Math.round(st.wc)}`); }
        const blob = await r.blob();
        if (st.url) URL.revokeObjectURL(st.url);
        st.url = URL.createObjectURL(blob);
        await new Promise((ok) => { img.onload = ok; img.onerror = ok; img.src = st.url; });
        img.dataset.index = String(st.idx);
      } while (st.again);
    } finally { st.busy = false; }
  }
  function go(i) {
    const n = Math.max(0, Math.min(st.slices.length - 1, i));
    if (n === st.idx && img.getAttribute("src")) return;
    st.idx = n; slider.value = String(n); show();
  }
  stage.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    if (ev.ctrlKey) { st.zoom = Math.max(0.25, Math.min(16, st.zoom * (ev.deltaY < 0 ? 1.2 : 1 / 1.2)));
                      place(); return; }
    go(st.idx + (ev.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  slider.addEventListener("input", () => go(Number(slider.value)));
  document.addEventListener("keydown", (ev) => {
    if (ev.target === slider) return;  // the slider moves itself
    if (ev.key === "ArrowDown" || ev.key === "ArrowRight") go(st.idx + 1);
    if (ev.key === "ArrowUp" || ev.key === "ArrowLeft") go(st.idx - 1);
  });
  stage.addEventListener("contextmenu", (ev) => ev.preventDefault());
  stage.addEventListener("mousedown", (ev) => {
    ev.preventDefault();
    const pan = ev.button === 2 || ev.shiftKey;
    let lx = ev.clientX, ly = ev.clientY;
    const move = (m) => {
      const dx = m.clientX - lx, dy = m.clientY - ly; lx = m.clientX; ly = m.clientY;
      if (pan) { st.x += dx; st.y += dy; place(); return; }
      if (st.wc === null) return;
      const k = Math.max(st.ww / 256, 0.5);
      st.ww = Math.max(1, st.ww + dx * k); st.wc = st.wc + dy * k;
      text("window", `W ${Math.round(st.ww)} L ${Math.round(st.wc)}`);
      show();
    };
    const up = () => { window.removeEventListener("mousemove", move); window.removeEventListener("mouseup", up); };
    window.addEventListener("mousemove", move); window.addEventListener("mouseup", up);
  });
  for (const b of document.querySelectorAll(".presets button")) {
    b.addEventListener("click", () => { st.wc = Number(b.dataset.wc); st.ww = Number(b.dataset.ww); show(); });
  }
  document.getElementById("zoom-in").onclick = () => { st.zoom *= 1.25; place(); };
  document.getElementById("zoom-out").onclick = () => { st.zoom /= 1.25; place(); };
  document.getElementById("reset").onclick = () => {
    st.zoom = 1; st.x = 0; st.y = 0; st.wc = null; st.ww = null; place(); show();
  };
  fetch(`api/series/${encodeURIComponent(uid)}`).then((r) => r.json()).then((data) => {
    st.slices = data.slices; st.instances = data.instances;
    slider.max = String(Math.max(0, st.slices.length - 1));
    if (!st.slices.length) { errorBox.textContent = "no images in this series"; errorBox.hidden = false; return; }
    show();
  });
})();
