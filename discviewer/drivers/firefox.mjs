// Drives Debian's firefox-esr over WebDriver BiDi (puppeteer-core, no browser download) for
// the pytest browser tests and the bench. Input (stdin, JSON):
//   { profile, cases: [{ url, password?, until?: state key, decoded?: [[uid, frame]], wait?: ms }] }
// Output (stdout, JSON): [{ state, decoded: [...], requests: [urls], errors: [...] }]
// One browser start for all cases; every wait is bounded.
import puppeteer from 'puppeteer-core';

const input = JSON.parse(await new Promise((res) => { let s = ''; process.stdin.on('data', (d) => { s += d; }); process.stdin.on('end', () => res(s)); }));
const browser = await puppeteer.launch({
  browser: 'firefox',
  executablePath: input.executable || '/usr/bin/firefox-esr',
  headless: true,
  userDataDir: input.profile,
  extraPrefsFirefox: { 'browser.shell.checkDefaultBrowser': false, 'app.update.enabled': false,
    'network.captive-portal-service.enabled': false, 'browser.safebrowsing.malware.enabled': false,
    'browser.safebrowsing.phishing.enabled': false, 'datareporting.policy.dataSubmissionEnabled': false },
  protocolTimeout: 60000,
});
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
    result.state = await page.evaluate('window.__discviewerTest.state()');
    result.resources = await page.evaluate("performance.getEntriesByType('resource').map((e) => e.name)");
    out.push(result);
    await page.close();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
