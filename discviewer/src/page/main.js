// The disc viewer's page: find the disc (fetch where the browser allows it, else the folder
// the user chooses or drops), unlock it (one PBKDF2 per disc), list it, show images, import.
import { decodeFrame } from '../decode.js';
import { Disc, explain, makeKeys, needs } from './session.js';
import { FileListSource, entriesFromDrop, entriesFromInput, tryFetchSource } from './source.js';
import { flatten, markSelected, renderList } from './list.js';
import { ImageView } from './view.js';
import { thumbnail } from './image.js';
import { showTags } from './tags.js';
import { Importer } from './importer.js';

const $ = (id) => document.getElementById(id);
const state = { phase: 'start', needs: null, problems: [], message: '', series: 0, shown: null, keyDerivations: 0 };
let disc = null;
let dicomdirBytes = null;
let readyResolve;
const ready = new Promise((r) => { readyResolve = r; });

function status(text) { $('status').textContent = text; }

function message(text) {
  state.message = text || '';
  $('message').textContent = text || '';
  $('message').hidden = !text;
}

function problem(err, fileId) {
  const text = explain(err, fileId);
  if (state.problems.includes(text)) return;
  state.problems.push(text);
  const li = document.createElement('li');
  li.textContent = text;
  $('problems').append(li);
  $('problems').hidden = false;
}

async function start() {
  const found = location.protocol === 'file:' || location.protocol.startsWith('http')
    ? await tryFetchSource(new URL('./', location.href)) : null;
  if (found) {
    await haveDisc(found.source, found.dicomdir);
  } else {
    state.phase = 'folder';
    status('Choose the disc folder to continue.');
    $('step-folder').hidden = false;
  }
  readyResolve();
}

async function fromEntries(entries) {
  message('');
  const source = new FileListSource(entries);
  if (!source.found) {
    message('There is no DICOMDIR in that folder. Choose the top folder of the disc (the one that holds INDEX.HTM).');
    return;
  }
  const bytes = await source.read('DICOMDIR');
  $('step-folder').hidden = true;
  await haveDisc(source, bytes);
}

async function haveDisc(source, bytes) {
  disc = new Disc(source);
  dicomdirBytes = bytes;
  let need;
  try {
    need = needs(bytes);
  } catch (err) {
    state.phase = 'error';
    message(explain(err));
    return;
  }
  state.needs = need;
  if (need.plain) {
    await unlock([]);
    return;
  }
  if (need.unsupported) {
    state.phase = 'unsupported';
    status('This disc cannot be opened in a browser.');
    message(explain({ code: 'unsupported-recipient' }));
    return;
  }
  state.phase = 'key';
  $('password-row').hidden = !need.password;
  $('keyfile-row').hidden = !need.certificate;
  $('step-key').hidden = false;
  status(need.password ? 'Type the password of the disc.' : 'Choose your private key file.');
  (need.password ? $('password') : $('keyfile')).focus();
}

async function unlock(keys) {
  const t0 = performance.now();
  try {
    const index = await disc.unlock(dicomdirBytes, keys);
    state.unlockMs = performance.now() - t0;
    $('step-key').hidden = true;
    $('password').value = '';
    $('keypass').value = '';
    message('');
    showDisc(index);
  } catch (err) {
    state.phase = 'key';
    status('The disc is still locked.');
    message(err && err.code ? explain(err) : `The disc could not be opened: ${err.message || err}`);
  }
}

let view;
function showDisc(index) {
  state.phase = 'open';
  const items = flatten(index);
  state.series = items.length;
  const images = items.reduce((n, i) => n + i.series.images.length, 0);
  status(`${index.patients.length} patient(s), ${items.length} series, ${images} image(s). Wheel or arrow keys: next image; drag: window/level.`);
  $('main').hidden = false;
  view = new ImageView({
    stage: $('stage'), canvas: $('canvas'), slider: $('slider'), sliderText: $('slider-text'),
    frameSlider: $('frame-slider'), frameRow: $('frame-row'), frameText: $('frame-text'),
    fitButton: $('fit'), invertButton: $('invert'), preset: $('preset'), playButton: $('play'),
    toolbar: $('toolbar'), overlayTl: $('overlay-tl'), overlayTr: $('overlay-tr'), overlayBl: $('overlay-bl'),
    mainTags: $('main-tags'),
  }, disc, {
    onError: (err, fileId) => problem(err, fileId),
    onShown: (image) => {
      state.shown = { fileId: image.fileId, sopInstanceUid: image.ref.sopInstanceUid, index: view.index, frame: view.frame,
        frames: view.frames, rows: image.frame.rows, columns: image.frame.columns, at: performance.now() };
    },
  });
  const select = (item) => { markSelected($('list'), item.key); state.selected = item.key; return view.load(item); };
  const slots = renderList($('list'), index, items, select);
  $('tags-button').addEventListener('click', () => { if (view.image) showTags($('tags-dialog'), $('tags-table'), $('tags-filter'), view.image.file); });
  const importer = new Importer({
    dialog: $('import-dialog'), patient: $('import-patient'), mediaId: $('media-id'), mediaIssuer: $('media-issuer'),
    mediaName: $('media-name'), mediaBirth: $('media-birth'), newId: $('new-id'), newIssuer: $('new-issuer'),
    newName: $('new-name'), newBirth: $('new-birth'), stowUrl: $('stow-url'), stowToken: $('stow-token'),
    save: $('save-zip'), send: $('send-stow'), close: $('import-close'), progress: $('import-progress'),
    status: $('import-status'), failed: $('import-failed'),
  }, disc);
  $('import-button').addEventListener('click', () => importer.open());
  if (items.length) {
    select(items[0]).then(() => thumbnails(items, slots));
  }
}

async function thumbnails(items, slots) {
  for (const item of items) {
    const images = item.series.images;
    const ref = images[Math.floor(images.length / 2)];
    if (!ref) continue;
    try {
      const { file } = await disc.open(ref.fileId);
      slots.get(item.key).replaceChildren(await thumbnail(file));
    } catch (err) {
      slots.get(item.key).textContent = '!';
      problem(err, ref.fileId);
    }
  }
  state.thumbnails = true;
  // Then every other file is checked in the background, so that a damaged one is named
  // now rather than when the user reaches it (nothing is kept: memory stays small).
  let checked = 0;
  for (const item of items) {
    for (const ref of item.series.images) {
      if (!(await disc.check(ref.fileId))) problem(disc.failed.get(ref.fileId), ref.fileId);
      checked += 1;
      if (checked % 25 === 0) state.checked = checked;
    }
  }
  state.checked = checked;
  state.checkedAt = performance.now();
  state.checkedAll = true;
}

function wire() {
  $('folder-input').addEventListener('change', (e) => fromEntries(entriesFromInput(e.target.files)));
  const zone = $('drop-zone');
  for (const target of [zone, document.body]) {
    target.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
    target.addEventListener('dragleave', () => zone.classList.remove('over'));
    target.addEventListener('drop', async (e) => {
      e.preventDefault();
      zone.classList.remove('over');
      if (state.phase !== 'folder') return;
      fromEntries(await entriesFromDrop(e.dataTransfer));
    });
  }
  $('key-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    state.unlockStarted = performance.now();
    message('');
    status('Opening the disc...');
    $('unlock').disabled = true;
    try {
      const file = $('keyfile').files && $('keyfile').files[0];
      let keys;
      try {
        keys = await makeKeys({
          password: $('password').value,
          keyFileBytes: file ? new Uint8Array(await file.arrayBuffer()) : undefined,
          keyPassword: $('keypass').value,
        });
      } catch (err) { // the password's characters, or the key file: secure.js says what is wrong
        message(`${(err && err.message) || err}`);
        status('The disc is still locked.');
        return;
      }
      if (!keys.length) { message('Type the password of the disc (or choose your key file).'); status('The disc is still locked.'); return; }
      await unlock(keys);
    } finally {
      $('unlock').disabled = false;
    }
  });
}

// The hook the browser tests use (no effect on the page).
window.__discviewerTest = {
  ready,
  state: () => ({ ...state, problems: [...state.problems], cachedFiles: disc ? disc.files.size : 0,
    keyDerivations: disc && disc.cache ? disc.cache.derivations : undefined }),
  async decoded(sopInstanceUid, frame = 0) {
    const ref = disc.index.patients.flatMap((p) => p.studies.flatMap((s) => s.series.flatMap((se) => se.images)))
      .find((i) => i.sopInstanceUid === sopInstanceUid);
    if (!ref) throw new Error(`no image ${sopInstanceUid} in the DICOMDIR`);
    const { file } = await disc.open(ref.fileId);
    const f = await decodeFrame(file, frame);
    return { rows: f.rows, columns: f.columns, samplesPerPixel: f.samplesPerPixel, values: Array.from(f.pixels) };
  },
  async show(seriesKey, index, frame = 0) {
    const button = document.querySelector(`.series-button[data-key="${seriesKey}"]`);
    if (state.selected !== seriesKey) { button.click(); await new Promise((r) => setTimeout(r, 0)); }
    await view.show(index, frame);
    return state.shown;
  },
};

wire();
start();
