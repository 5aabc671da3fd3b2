// Browser decode speed of the embedded demo model (models/minimax-demo): loads it in headless
// Chromium through the page's worker client and times greedy generation, for BENCHMARKS.md.
// Usage (after web/build.sh and `npm ci` here): node bench.mjs [--tokens 64] [--prompt "..."] [--model DIR/]
// The native figure to compare with: minimax bench --backend gpu (same model, same machine).
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: args } = parseArgs({
  options: {
    tokens: { type: 'string', default: '64' },
    prompt: { type: 'string', default: 'Once upon a time' },
    // A model directory under the repository root, e.g. an expert pack made by `minimax convert`.
    model: { type: 'string', default: 'models/minimax-demo/' },
  },
});
const repo = fileURLToPath(new URL('../../', import.meta.url));
const FLAGS = ['--enable-unsafe-webgpu', '--no-sandbox', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

const server = spawn(process.execPath, [`${repo}web/serve.mjs`, '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
const base = await new Promise((resolve, reject) => {
  server.stdout.on('data', (d) => {
    const m = /serving (http:\/\/127\.0\.0\.1:\d+)\/web\//.exec(String(d));
    if (m) resolve(m[1]);
  });
  server.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
});
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: FLAGS });
try {
  const page = await browser.newPage();
  await page.goto(`${base}/web/test.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  const r = await page.evaluate(async ({ url, prompt, steps }) => {
    const mm = new window.MiniMax();
    let t = performance.now();
    const info = await mm.load(url, { cache: false });
    const load = performance.now() - t;
    // Warm-up: compiles every pipeline once.
    await mm.generate(prompt, { maxTokens: 4, ignoreEos: true }, () => {});
    const stamps = [];
    t = performance.now();
    await mm.generate(prompt, { maxTokens: steps, ignoreEos: true }, () => stamps.push(performance.now()));
    await mm.free();
    // The first token's time is prefill (plus one sample); the rest are decode steps.
    return { info, load, prefill: stamps[0] - t, decode: (stamps.length - 1) / ((stamps.at(-1) - stamps[0]) / 1000) };
  }, { url: `${base}/${args.model}`, prompt: args.prompt, steps: Number(args.tokens) });
  console.log(`adapter: ${r.info.device}`);
  console.log(`load ${r.load.toFixed(0)} ms; prefill+first token ${r.prefill.toFixed(0)} ms; decode ${r.decode.toFixed(2)} tokens/s over ${args.tokens} tokens`);
} finally {
  await browser.close();
  server.kill();
}
