// Type-checks the demo page's script: extracts the inline <script> of examples/chat/index.html
// (the page keeps `// @ts-check` and JSDoc types naming the demo's events) to page.gen.js, then
// runs tsc with tsconfig.json beside this file. Exits with tsc's status.
import { readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const page = readFileSync(join(here, '../../../examples/chat/index.html'), 'utf8');
const scripts = [...page.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]);
if (scripts.length !== 1) {
  console.error(`expected one inline <script> in the page, found ${scripts.length}`);
  process.exit(1);
}
if (!/^\s*\/\/ @ts-check/.test(scripts[0])) {
  console.error('the page script does not start with `// @ts-check`');
  process.exit(1);
}
// The script's first line stays line 1 of the page's <script>: tsc's line numbers are the
// script's, counted from its opening tag.
writeFileSync(join(here, 'page.gen.js'), scripts[0]);
const tsc = spawnSync('npx', ['--no-install', 'tsc', '-p', join(here, 'tsconfig.json')], { stdio: 'inherit' });
process.exit(tsc.status ?? 1);
