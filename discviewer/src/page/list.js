// The patient / study / series list from the DICOMDIR, with a thumbnail per series.
import { date, name, text } from './format.js';

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v; else if (k.startsWith('data-')) node.setAttribute(k, v); else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
};

/** Series in display order, each with its patient and study: [{ key, patient, study, series }]. */
export function flatten(index) {
  const out = [];
  index.patients.forEach((patient, p) => patient.studies.forEach((study, s) => study.series.forEach((series, r) => {
    series.images.sort((a, b) => (a.instanceNumber ?? 0) - (b.instanceNumber ?? 0));
    out.push({ key: `${p}.${s}.${r}`, patient, study, series });
  })));
  return out;
}

/** Renders the list into `nav`; calls onSelect(item) when a series is chosen. Returns thumbnail slots. */
export function renderList(nav, index, items, onSelect) {
  nav.replaceChildren();
  const slots = new Map();
  const byKey = new Map(items.map((i) => [i.key, i]));
  index.patients.forEach((patient, p) => {
    const studies = el('ul', { class: 'studies' });
    patient.studies.forEach((study, s) => {
      const count = study.series.reduce((n, x) => n + x.images.length, 0);
      const series = el('ul', { class: 'series' });
      study.series.forEach((se, r) => {
        const key = `${p}.${s}.${r}`;
        const slot = el('span', { class: 'thumb' });
        slots.set(key, slot);
        const button = el('button', { class: 'series-button', type: 'button', 'data-key': key, title: text(se.uid) },
          slot,
          el('span', { class: 'series-text' },
            el('strong', {}, `${text(se.modality)} ${se.number !== undefined ? `#${text(se.number)}` : ''}`),
            el('span', {}, text(se.description) || '(no description)'),
            el('span', { class: 'count' }, `${se.images.length} image${se.images.length === 1 ? '' : 's'}`)));
        button.addEventListener('click', () => onSelect(byKey.get(key)));
        series.append(el('li', {}, button));
      });
      studies.append(el('li', { class: 'study' },
        el('div', { class: 'study-head' },
          el('strong', {}, date(study.date) || '(no date)'), ' ',
          el('span', {}, (study.modalities || []).join('/')), ' ',
          el('span', {}, text(study.description)), ' ',
          el('span', { class: 'count' }, `${study.series.length} series, ${count} images`)),
        series));
    });
    nav.append(el('section', { class: 'patient' },
      el('h2', {}, name(patient.name) || '(no name)'),
      el('p', { class: 'patient-ids' },
        `ID ${text(patient.id)}${patient.issuer ? ` (${text(patient.issuer)})` : ''}`,
        patient.birthDate ? ` - born ${date(patient.birthDate)}` : '',
        patient.sex ? ` - ${text(patient.sex)}` : ''),
      studies));
  });
  return slots;
}

export function markSelected(nav, key) {
  for (const b of nav.querySelectorAll('.series-button')) b.classList.toggle('on', b.dataset.key === key);
}
