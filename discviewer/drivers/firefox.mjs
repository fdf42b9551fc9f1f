// Drives Debian's firefox-esr over WebDriver BiDi (puppeteer-core, no browser download) for
// the pytest browser tests and the bench. Input (stdin, JSON):
//   { profile, downloads?: folder, cases: [{ url, password?, keyfile?: path, keypass?,
//     until?: state key, decoded?: [[uid, frame]], wait?: ms,
//     importZip?: { patient: media Patient ID, id, issuer, name?, birth? } }] }
// Output (stdout, JSON): [{ state, decoded: [...], requests: [urls], errors: [...],
//   zip?: path of the saved zip (in `downloads`), importStatus?: text }]
// One browser start for all cases; every wait is bounded.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const input = JSON.parse(await new Promise((res) => { let s = ''; process.stdin.on('data', (d) => { s += d; }); process.stdin.on('end', () => res(s)); }));
const browser = await puppeteer.launch({
  browser: 'firefox',
  executablePath: input.executable || '/usr/bin/firefox-esr',
  headless: true,
  userDataDir: input.profile,
  extraPrefsFirefox: { 'browser.shell.checkDefaultBrowser': false, 'app.update.enabled': false,
    'network.captive-portal-service.enabled': false, 'browser.safebrowsing.malware.enabled': false,
    'browser.safebrowsing.phishing.enabled': false, 'datareporting.policy.dataSubmissionEnabled': false,
    // a download (the import's zip) goes to `downloads` without a dialog
    ...(input.downloads ? { 'browser.download.dir': input.downloads, 'browser.download.folderList': 2,
      'browser.download.useDownloadDir': true, 'browser.download.always_ask_before_handling_new_types': false,
      'browser.download.start_downloads_in_tmp_dir': false } : {}) },
  protocolTimeout: 60000,
});
/** The import form filled as a user does, then "Save a decrypted copy (zip)"; bounded wait. */
async function saveZip(page, form, downloads) {
  await page.click('#import-button');
  await page.waitForSelector('#import-dialog[open]', { timeout: 10000 });
  const value = await page.evaluate((id) => [...document.querySelectorAll('#import-patient option')]
    .find((o) => o.textContent.includes(id)).value, form.patient);
  await page.select('#import-patient', value);
  for (const [sel, v] of [['#new-id', form.id], ['#new-issuer', form.issuer], ['#new-name', form.name], ['#new-birth', form.birth]]) {
    if (v === undefined) continue;
    await page.$eval(sel, (e) => { e.value = ''; });
    await page.type(sel, v);
  }
  await page.click('#save-zip');
  const deadline = Date.now() + 30000;
  for (;;) {
    const done = readdirSync(downloads).filter((n) => n.endsWith('.zip'));
    const partial = readdirSync(downloads).some((n) => n.endsWith('.part'));
    if ((done.length && !partial) || Date.now() > deadline) {
      const importStatus = await page.evaluate(() => document.querySelector('#import-status').textContent);
      return { zip: done.length ? join(downloads, done[0]) : null, importStatus };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const out = [];
try {
  for (const c of input.cases) {
    const page = await browser.newPage();
    const requests = [];
    const errors = [];
    page.on('request', (r) => requests.push(r.url()));
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(c.url, { waitUntil: 'load', timeout: 30000 });
    await page.evaluate('window.__discviewerTest.ready');
    const result = { requests, errors, decoded: [] };
    if (c.keyfile !== undefined) {
      await page.waitForSelector('#keyfile', { visible: true, timeout: 10000 });
      const input = await page.$('#keyfile');
      await input.uploadFile(c.keyfile);
      if (c.keypass) await page.type('#keypass', c.keypass);
      await page.click('#unlock');
    }
    if (c.password !== undefined) {
      await page.waitForSelector('#password', { visible: true, timeout: 10000 });
      await page.type('#password', c.password);
      await page.click('#unlock');
    }
    const deadline = Date.now() + (c.wait || 20000);
    const until = c.until || 'thumbnails';
    const done = c.password === 'WRONG' ? (s) => s.message : (s) => s[until] || s.message || s.phase === 'unsupported';
    let state;
    for (;;) {
      state = await page.evaluate('window.__discviewerTest.state()');
      if (done(state) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    result.state = state;
    for (const [uid, frame] of c.decoded || []) {
      const d = await page.evaluate((u, f) => window.__discviewerTest.decoded(u, f), uid, frame);
      result.decoded.push(d);
    }
    for (const [key, index, frame] of c.show || []) {
      result.shown = await page.evaluate((k, i, f) => window.__discviewerTest.show(k, i, f), key, index, frame);
    }
    if (c.importZip) Object.assign(result, await saveZip(page, c.importZip, input.downloads));
    result.state = await page.evaluate('window.__discviewerTest.state()');
    result.resources = await page.evaluate("performance.getEntriesByType('resource').map((e) => e.name)");
    out.push(result);
    await page.close();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
