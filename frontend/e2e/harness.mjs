// What the browser checks (dashboard, alerts, trends) share: the gateway and org they run
// against (environment), the step log and its failures, test-id selectors, and the control
// line to tests/dashboard_e2e.rs (`@@ <command>` out, one answer line in).
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const BASE = process.env.STREAMTALLY_URL || 'http://127.0.0.1:8080/';
export const ORG = process.env.STREAMTALLY_ORG;
export const TOKEN = process.env.STREAMTALLY_TOKEN;
export const SHOTS = fileURLToPath(new URL('../../target/screenshots/', import.meta.url));
export const TIMEOUT_MS = Number(process.env.STREAMTALLY_E2E_TIMEOUT_MS || 20_000);
// Under tests/dashboard_e2e.rs the test owns the connector and the broker: `@@ <command>`
// lines ask it to produce events or to kill/start the connector, and it answers one line.
export const CONTROL = process.env.STREAMTALLY_E2E_CONTROL === '1';
const controlInput = CONTROL ? createInterface({ input: process.stdin }) : null;
const answers = controlInput?.[Symbol.asyncIterator]() ?? null;

if (!ORG || !TOKEN) {
  console.error('Set STREAMTALLY_ORG and STREAMTALLY_TOKEN (and STREAMTALLY_URL if not http://127.0.0.1:8080/).');
  process.exit(2);
}

export const failures = [];
export let step = '';
export const log = (s) => {
  step = s;
  console.log(`- ${s}`);
};
export const check = (ok, what) => {
  if (!ok) failures.push(`${step}: ${what}`);
  console.log(`  ${ok ? 'ok' : 'FAILED'}: ${what}`);
};
export const tid = (id) => `[data-testid="${id}"]`;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Asks the test for something only it can do; resolves to its answer. */
export async function control(command) {
  process.stdout.write(`@@ ${command}\n`);
  const { value, done } = await answers.next();
  if (done) throw new Error(`the test did not answer '${command}'`);
  return value;
}

/** The org's API with the org token: the JSON answer (null for a 204), or an Error. */
export async function api(path, init = {}) {
  const res = await fetch(new URL(`api/v1/orgs/${ORG}/${path}`, BASE), {
    ...init,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
  });
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path}: ${res.status} ${await res.text()}`);
  return res.status === 204 ? null : res.json();
}

/** Stops the control line so the process can exit. */
export function closeControl() {
  controlInput?.close();
}

/**
 * Runs axe-core (the accessibility rules of WCAG 2.0/2.1 A and AA, and best practices) on the
 * page as it is now, prints every finding and fails the step on a serious or critical one.
 */
export async function checkAccessibility(page, what) {
  await page.addScriptTag({ path: fileURLToPath(new URL('../node_modules/axe-core/axe.min.js', import.meta.url)) });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  for (const v of result.violations) {
    const where = v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ');
    console.log(`  axe ${v.impact}: ${v.id} on ${v.nodes.length} node(s), e.g. ${where}: ${v.help}`);
  }
  const serious = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(
    serious.length === 0,
    `${what}: no serious or critical accessibility findings (axe-core ${result.testEngine.version}; ${result.violations.length - serious.length} minor or moderate)`,
  );
}

/** Creates a saved dashboard named `name` through the page ("New", the name, "Create") and waits until it is selected. */
export async function createDashboard(page, name) {
  await page.getByRole('button', { name: 'New', exact: true }).click();
  await page.locator(tid('dashboard-name')).fill(name);
  await page.getByRole('button', { name: 'Create', exact: true }).click();
  await page.waitForFunction(
    (name) => document.querySelector('[data-testid="dashboard-select"]')?.selectedOptions[0]?.textContent === name,
    name,
    { timeout: TIMEOUT_MS },
  );
}
