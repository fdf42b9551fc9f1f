// The image view: one series, scrolled by wheel, arrow keys and slider; window/level by drag,
// presets, zoom/pan, fit, invert; multi-frame play. Decoding is in image.js.
import { renderFrame } from './image.js';
import { date, name, text } from './format.js';

const PREFETCH = 4;

export class ImageView {
  constructor(elements, disc, { onError, onShown }) {
    Object.assign(this, elements);
    this.disc = disc;
    this.onError = onError;
    this.onShown = onShown || (() => {});
    this.item = null;
    this.index = 0;       // image in the series
    this.frame = 0;       // frame in a multi-frame image
    this.frames = 1;
    this.window = null;   // { center, width } chosen by the user, kept through the series
    this.invert = false;
    this.zoom = 1; this.panX = 0; this.panY = 0; this.fitted = true;
    this.mode = 'wl';
    this.image = null;    // { canvas, frame, window, file, fileId }
    this.token = 0;
    this.playing = null;
    this.bind();
  }

  bind() {
    this.stage.addEventListener('wheel', (e) => {
      e.preventDefault();
      if (e.ctrlKey) this.zoomBy(e.deltaY < 0 ? 1.1 : 1 / 1.1);
      else this.step(e.deltaY > 0 ? 1 : -1);
    }, { passive: false });
    this.stage.addEventListener('keydown', (e) => this.key(e));
    document.addEventListener('keydown', (e) => { if (e.target === document.body) this.key(e); });
    this.slider.addEventListener('input', () => this.show(Number(this.slider.value), 0));
    this.frameSlider.addEventListener('input', () => this.show(this.index, Number(this.frameSlider.value)));
    this.stage.addEventListener('contextmenu', (e) => e.preventDefault());
    this.stage.addEventListener('pointerdown', (e) => this.drag(e));
    this.fitButton.addEventListener('click', () => this.fit());
    this.invertButton.addEventListener('click', () => { this.invert = !this.invert; this.redraw(true); });
    this.preset.addEventListener('change', () => {
      const [c, w] = this.preset.value.split(',').map(Number);
      this.window = this.preset.value ? { center: c, width: w } : null;
      this.redraw(true);
    });
    this.playButton.addEventListener('click', () => this.togglePlay());
    for (const b of this.toolbar.querySelectorAll('[data-mode]')) {
      b.addEventListener('click', () => {
        this.mode = b.dataset.mode;
        for (const o of this.toolbar.querySelectorAll('[data-mode]')) o.classList.toggle('on', o === b);
      });
    }
    new ResizeObserver(() => this.paint()).observe(this.stage);
  }

  key(e) {
    const keys = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 };
    if (e.key in keys) { e.preventDefault(); this.step(keys[e.key]); }
    else if (e.key === 'Home') this.show(0, 0);
    else if (e.key === 'End') this.show(this.count() - 1, 0);
    else if (e.key === 'f' || e.key === 'F') this.fit();
    else if (e.key === 'i' || e.key === 'I') this.invertButton.click();
    else if (e.key === 'p' || e.key === 'P') this.togglePlay();
  }

  count() { return this.item ? this.item.series.images.length : 0; }

  async load(item) {
    this.stopPlay();
    this.item = item;
    this.window = null;
    this.preset.value = '';
    this.fitted = true;
    this.slider.max = String(Math.max(0, this.count() - 1));
    await this.show(0, 0);
  }

  step(delta) {
    if (!this.item) return;
    if (this.frames > 1 && this.count() === 1) return this.show(this.index, clamp(this.frame + delta, 0, this.frames - 1));
    return this.show(clamp(this.index + delta, 0, this.count() - 1), 0);
  }

  /** Shows image `index`, frame `frame` of the series; the latest request wins. */
  async show(index, frame) {
    if (!this.item) return;
    const token = ++this.token;
    const ref = this.item.series.images[index];
    this.index = index;
    this.slider.value = String(index);
    this.sliderText.textContent = `${index + 1} / ${this.count()}`;
    try {
      const { file } = await this.disc.open(ref.fileId);
      if (token !== this.token) return;
      this.frames = Math.max(1, file.frames || 1);
      this.frame = clamp(frame, 0, this.frames - 1);
      const rendered = await renderFrame(file, this.frame, this.window, this.invert);
      if (token !== this.token) return;
      this.image = { ...rendered, file, fileId: ref.fileId, ref };
      this.frameRow.hidden = this.frames <= 1;
      this.playButton.hidden = this.frames <= 1 && this.count() <= 1;
      this.frameSlider.max = String(this.frames - 1);
      this.frameSlider.value = String(this.frame);
      this.frameText.textContent = `${this.frame + 1} / ${this.frames}`;
      this.paint();
      this.overlays();
      this.onShown(this.image);
      this.prefetch(index);
    } catch (err) {
      if (token !== this.token) return;
      this.image = null;
      this.paint();
      this.onError(err, ref.fileId);
    }
  }

  prefetch(index) {
    const images = this.item.series.images;
    for (let k = 1; k <= PREFETCH; k++) {
      const ref = images[index + k];
      if (ref) this.disc.open(ref.fileId).catch(() => {});
    }
  }

  async redraw(keepView) {
    if (!this.image) return;
    const token = ++this.token;
    const rendered = await renderFrame(this.image.file, this.frame, this.window || this.image.window, this.invert);
    if (token !== this.token) return;
    Object.assign(this.image, rendered);
    if (!keepView) this.fitted = true;
    this.paint();
    this.overlays();
  }

  paint() {
    const c = this.canvas;
    const w = this.stage.clientWidth, h = this.stage.clientHeight;
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const ctx = c.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, w, h);
    if (!this.image) return;
    const img = this.image.canvas;
    if (this.fitted) {
      this.zoom = Math.min(w / img.width, h / img.height) || 1;
      this.panX = 0; this.panY = 0;
    }
    ctx.imageSmoothingEnabled = this.zoom < 3;
    ctx.setTransform(this.zoom, 0, 0, this.zoom, w / 2 + this.panX, h / 2 + this.panY);
    ctx.drawImage(img, -img.width / 2, -img.height / 2);
  }

  fit() { this.fitted = true; this.paint(); }

  zoomBy(f) { this.fitted = false; this.zoom = clamp(this.zoom * f, 0.05, 40); this.paint(); }

  drag(e) {
    if (!this.image) return;
    this.stage.focus();
    const mode = e.button === 1 || e.shiftKey ? 'pan' : e.button === 2 ? 'zoom' : this.mode;
    const start = { x: e.clientX, y: e.clientY, panX: this.panX, panY: this.panY, zoom: this.zoom,
      win: this.window || { center: this.image.window.center, width: this.image.window.width } };
    this.stage.setPointerCapture(e.pointerId);
    let pending = false;
    const move = (m) => {
      const dx = m.clientX - start.x, dy = m.clientY - start.y;
      if (mode === 'pan') { this.fitted = false; this.panX = start.panX + dx; this.panY = start.panY + dy; this.paint(); }
      else if (mode === 'zoom') { this.fitted = false; this.zoom = clamp(start.zoom * Math.exp(-dy / 200), 0.05, 40); this.paint(); }
      else {
        const scale = Math.max(1, start.win.width / 256);
        this.window = { center: start.win.center + dy * scale, width: Math.max(1, start.win.width + dx * scale) };
        this.preset.value = '';
        if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; this.redraw(true); }); }
      }
    };
    const up = () => { this.stage.removeEventListener('pointermove', move); this.stage.removeEventListener('pointerup', up); this.stage.removeEventListener('pointercancel', up); };
    this.stage.addEventListener('pointermove', move);
    this.stage.addEventListener('pointerup', up);
    this.stage.addEventListener('pointercancel', up);
  }

  togglePlay() { if (this.playing) this.stopPlay(); else this.startPlay(); }

  startPlay() {
    if (!this.image) return;
    this.playButton.textContent = 'Stop';
    const tick = async () => {
      if (!this.playing) return;
      const t0 = performance.now();
      if (this.frames > 1) await this.show(this.index, (this.frame + 1) % this.frames);
      else await this.show((this.index + 1) % this.count(), 0);
      if (this.playing) this.playing = setTimeout(tick, Math.max(0, 66 - (performance.now() - t0)));
    };
    this.playing = setTimeout(tick, 0);
  }

  stopPlay() {
    if (this.playing) clearTimeout(this.playing);
    this.playing = null;
    this.playButton.textContent = 'Play';
  }

  overlays() {
    const f = this.image.file;
    const s = (t) => text(f.string(t));
    const win = this.window || this.image.window;
    this.overlayTl.textContent = `${name(s('00100010'))}\n${s('00100020')}\n${date(s('00080020'))} ${s('00081030')}`;
    this.overlayTr.textContent = `${s('00080060')} ${s('0008103E')}\nImage ${this.index + 1}/${this.count()}${this.frames > 1 ? `  frame ${this.frame + 1}/${this.frames}` : ''}`;
    this.overlayBl.textContent = `W ${Math.round(win.width)} C ${Math.round(win.center)}  zoom ${this.zoom.toFixed(2)}`;
    const rows = [
      ['Patient', `${name(s('00100010'))} (${s('00100020')})`], ['Birth date', date(s('00100030'))],
      ['Study', `${date(s('00080020'))} ${s('00081030')}`], ['Accession', s('00080050')],
      ['Series', `${s('00200011')} ${s('0008103E')}`], ['Modality', s('00080060')],
      ['Instance', s('00200013')], ['Slice location', s('00201041')], ['Slice thickness', s('00180050')],
      ['Size', `${this.image.frame.columns} x ${this.image.frame.rows}`], ['Photometric', text(this.image.frame.photometric)],
      ['Transfer syntax', text(f.transferSyntax)], ['SOP Instance UID', s('00080018')],
    ];
    this.mainTags.replaceChildren(...rows.filter(([, v]) => v && v.trim()).flatMap(([k, v]) => {
      const dt = document.createElement('dt'); dt.textContent = k;
      const dd = document.createElement('dd'); dd.textContent = v;
      return [dt, dd];
    }));
  }
}

function clamp(v, lo, hi) { return Math.min(hi, Math.max(lo, v)); }
