import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';

// Dark mode follows the system: every colour variable is set again under prefers-color-scheme.
it('the stylesheet has a dark scheme for every colour variable', () => {
  const css = readFileSync(new URL('../src/styles.css', import.meta.url), 'utf8');
  const root = /:root \{([\s\S]*?)\n\}/.exec(css)![1];
  const vars = [...root.matchAll(/(--[a-z-]+): #/g)].map((m) => m[1]);
  expect(vars.length).toBeGreaterThan(5);
  const dark = /@media \(prefers-color-scheme: dark\) \{\s*:root \{([\s\S]*?)\}/.exec(css)![1];
  for (const v of vars.filter((v) => v !== '--focus')) expect(dark).toContain(`${v}:`);
  expect(dark).toContain('color-scheme: dark');
});
