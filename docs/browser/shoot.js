// Screenshots of the Neo4j Browser for docs/browser/index.md, taken in headless Chromium.
//
//   npm install playwright-core            (in any scratch folder; use NODE_PATH to point here)
//   node docs/browser/shoot.js HTTP_PORT BOLT_PORT OUT_DIR    (password from NEO4J_PASSWORD)
//
// The store: a `circuitstore server start` home filled by `circuitstore ingest` of the tiny test
// model (tests/integration/conftest.py::tiny_weights, 24 prompts of make_corpus). Each shot runs
// one numbered block of query/cookbook.cypher exactly as written there (its :param lines, then
// its query), after the style has been applied from query/style.grass.
//
// The style is *pasted* into the editor (a synthetic paste event), never typed: the Browser's
// editor auto-closes every typed `{`, and the stray `}` left at the end becomes a style rule with
// an empty selector, which crashes every later graph view ("Cannot read properties of undefined
// (reading 'replace')") and is kept in localStorage across reloads until `:style reset`.
const { chromium } = require('playwright-core');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [http, bolt, out] = process.argv.slice(2);
const password = process.env.NEO4J_PASSWORD;
const root = path.resolve(__dirname, '..', '..');
const style = fs.readFileSync(path.join(root, 'query', 'style.grass'), 'utf8');
const cookbook = fs.readFileSync(path.join(root, 'query', 'cookbook.cypher'), 'utf8');

// [file name, cookbook block number (or 'style'), milliseconds to let the layout settle]
const SHOTS = [
  ['01-style', 'style', 2500],
  ['02-corpus-drivers', 3, 3000],
  ['03-corpus-drivers-graph', 4, 7000],
  ['04-corpus-targets-graph', 5, 7000],
  ['05-prompt-drivers-graph', 8, 7000],
  ['06-top-examples', 6, 3000],
  ['07-prompt-circuit-graph', 10, 8000],
];

function block(n) {
  const chunk = cookbook.split('\n\n').find((c) => c.startsWith(`// ${n}. `));
  if (!chunk) throw new Error(`no block ${n} in query/cookbook.cypher`);
  const lines = chunk.split('\n').filter((l) => l.trim() && !l.startsWith('//'));
  const params = lines.filter((l) => l.startsWith(':param')).map((l) => l.replace(/;$/, ''));
  const query = lines.filter((l) => !l.startsWith(':param')).join('\n').replace(/;$/, '');
  return [...params, query];
}

(async () => {
  if (!password) throw new Error('set NEO4J_PASSWORD');
  fs.mkdirSync(out, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'cs-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    viewport: { width: 1400, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text().slice(0, 300)));
  page.on('pageerror', (e) => errors.push(String(e).slice(0, 300)));
  await page.goto(`http://127.0.0.1:${http}/browser/?dbms=neo4j://127.0.0.1:${bolt}&preselectAuthMethod=NATIVE`);
  await page.waitForTimeout(3000);
  await page.locator('[data-testid="username"]').fill('neo4j');
  await page.locator('[data-testid="password"]').fill(password);
  await page.locator('[data-testid="connect"]').click();
  // Connected once the editor's prompt names the database; the start frame follows shortly.
  await page.getByText('neo4j$').first().waitFor({ timeout: 60000 });
  await page.waitForTimeout(3000);

  const run = async (cmd) => {
    await page.locator('.monaco-editor').first().click();
    await page.keyboard.press('Control+A');
    await page.keyboard.press('Delete');
    await page.evaluate((text) => {
      const target = document.activeElement; // the editor's hidden textarea
      const data = new DataTransfer();
      data.setData('text/plain', text);
      target.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }));
    }, cmd);
    await page.keyboard.press('Control+Enter');
    await page.waitForTimeout(800);
  };

  await run(':style reset');
  let failed = false;
  for (const [name, what, settle] of SHOTS) {
    await run(':clear');
    const cmds = what === 'style' ? [`:style ${style}`] : block(what);
    for (const cmd of cmds) await run(cmd);
    await page.waitForTimeout(settle);
    await page.mouse.move(5, 890); // no hover highlight in the picture
    const crashed = (await page.getByText('Something went wrong').count()) > 0;
    await page.screenshot({ path: path.join(out, `${name}.png`) });
    console.log(name, crashed ? 'CRASHED' : 'ok');
    failed ||= crashed;
  }
  if (errors.length) console.log('browser errors:\n' + errors.join('\n'));
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.error(e); process.exit(1); });
