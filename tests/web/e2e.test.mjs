// End-to-end tests of the browser runtime: the wasm build in headless Chromium (WebGPU on
// SwiftShader), driven through the page's worker client, against the same oracle fixtures as
// the native tests. Needs `web/build.sh` to have built web/pkg, Debian's chromium, and
// `npm ci` here for playwright-core; the page is served on 127.0.0.1 by web/serve.mjs.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const FLAGS = ['--enable-unsafe-webgpu', '--no-sandbox', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];
let server;
let browser;
let base;

/** A little-endian float32 .npy file as { shape, data }. */
function readNpy(path) {
  const bytes = readFileSync(path);
  const major = bytes[6];
  const headerLen = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = bytes.subarray(start, start + headerLen).toString('latin1');
  assert.match(header, /'descr': '<f4'/);
  const shape = /'shape': \(([^)]*)\)/.exec(header)[1].split(',').filter((s) => s.trim()).map(Number);
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset + start + headerLen, bytes.byteOffset + bytes.length));
  return { shape, data };
}

function fixture(name) {
  const dir = `${repo}tests/fixtures/${name}/`;
  const reference = JSON.parse(readFileSync(`${dir}reference.json`, 'utf8'));
  return { url: `${base}/tests/fixtures/${name}/`, reference, logits: readNpy(`${dir}logits.npy`) };
}

function maxAbs(a, b) {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

before(async () => {
  server = spawn(process.execPath, [`${repo}web/serve.mjs`, '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  base = await new Promise((resolve, reject) => {
    server.stdout.on('data', (d) => {
      const m = /serving (http:\/\/127\.0\.0\.1:\d+)\/web\//.exec(String(d));
      if (m) resolve(m[1]);
    });
    server.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: FLAGS });
});

after(async () => {
  await browser?.close();
  server?.kill();
});

async function harness() {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error(`[page] ${m.text()}`); });
  page.on('pageerror', (e) => console.error(`[page] ${e.message}`));
  await page.goto(`${base}/web/test.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  return page;
}

/** Loads `source` in the page's worker, then runs logits and greedy generation on `prompt`. */
async function run(page, source, prompt, steps, options = {}) {
  return page.evaluate(async ({ source, prompt, steps, options }) => {
    const mm = new window.MiniMax();
    const phases = {};
    let files = null;
    if (Array.isArray(source)) {
      // Emulate a directory picker: File objects built from the served files.
      files = await Promise.all(source.map(async (url) => {
        const blob = await (await fetch(url)).blob();
        return new File([blob], url.split('/').pop());
      }));
    }
    window.gaps.reset();
    const started = performance.now();
    const info = await mm.load(files ?? source, { ...options, onProgress: (e) => { phases[e.phase] = (phases[e.phase] ?? 0) + 1; } });
    const logits = await mm.logits(prompt);
    const streamed = [];
    const generated = await mm.generate(prompt, { maxTokens: steps, ignoreEos: true }, ({ token }) => streamed.push(token));
    const elapsed = performance.now() - started;
    const maxGap = window.gaps.max;
    await mm.free();
    return { info, logits: Array.from(logits), tokens: generated.tokens, streamed, phases, maxGap, elapsed };
  }, { source, prompt, steps, options });
}

test('logits and greedy tokens match the oracle; progress fires; the page never blocks', async () => {
  const f = fixture('minimax-7to1');
  const page = await harness();
  const r = await run(page, f.url, f.reference.prompt, f.reference.greedy.length);
  console.log(`adapter: ${r.info.device}; load+logits+generate ${r.elapsed.toFixed(0)} ms, longest main-thread gap ${r.maxGap.toFixed(0)} ms`);
  assert.ok(r.info.adapter, 'WebGPU adapter expected (SwiftShader)');
  const err = maxAbs(r.logits, f.logits.data);
  console.log(`logits max-abs ${err.toExponential(2)}`);
  assert.ok(err <= f.reference.tolerance_max_abs, `max-abs ${err}`);
  assert.deepEqual(r.tokens, f.reference.greedy);
  assert.deepEqual(r.streamed, f.reference.greedy, 'every token was streamed');
  assert.ok((r.phases.download ?? 0) + (r.phases.cached ?? 0) > 0 && r.phases.load > 0, JSON.stringify(r.phases));
  assert.ok(r.maxGap < 500 && r.maxGap * 4 < r.elapsed, `main thread blocked ${r.maxGap} ms of ${r.elapsed} ms`);
  // A second load of the same model comes from the browser cache (OPFS).
  const again = await run(page, f.url, f.reference.prompt.slice(0, 3), 1);
  assert.ok(again.phases.cached > 0 && !again.phases.download, JSON.stringify(again.phases));
  await page.close();
});

test('a tensor beyond a lowered binding limit is split and gives the same logits', async () => {
  const f = fixture('minimax-7to1');
  const page = await harness();
  // lm_head and the embedding are 320 x 64 f32 = 80 KiB: three blocks under 32 KiB.
  const r = await run(page, f.url, f.reference.prompt, 2, { maxBindingBytes: 32768 });
  const err = maxAbs(r.logits, f.logits.data);
  assert.ok(err <= f.reference.tolerance_max_abs, `max-abs ${err}`);
  assert.deepEqual(r.tokens, f.reference.greedy.slice(0, 2));
  await page.close();
});

test('linear layers in Q8_0 blocks run on WebGPU and match the native CPU backend on the same blocks', async () => {
  const f = fixture('minimax-7to1');
  const bin = process.env.MINIMAX_BIN ?? `${repo}target/release/minimax`;
  const out = `${repo}tests/web/.packs/7to1-q8-logits.npy`;
  mkdirSync(`${repo}tests/web/.packs`, { recursive: true });
  rmSync(out, { force: true });
  execFileSync(bin, ['logits', '--model', `${repo}tests/fixtures/minimax-7to1`, '--backend', 'cpu', '--dtype', 'q8',
    '--tokens', f.reference.prompt.join(','), '--out', out], { stdio: 'inherit' });
  const expected = readNpy(out);
  const page = await harness();
  const r = await run(page, f.url, f.reference.prompt, 2, { dtype: 'q8' });
  assert.equal(r.info.model.matrixDtype, 'Q8_0');
  const err = maxAbs(r.logits, expected.data);
  console.log(`q8 blocks in the browser against the native CPU: logits max-abs ${err.toExponential(2)}`);
  assert.ok(err <= 1e-4, `max-abs ${err}`);
  // Quantization moved the logits away from the f32 oracle, so this is not a vacuous match.
  assert.ok(maxAbs(r.logits, f.logits.data) > 10 * err);
  await page.close();
});

test('sharded bf16 weights read with Range requests (no cache) and from picked files', async () => {
  const f = fixture('minimax-sharded-bf16');
  const page = await harness();
  const ranged = await run(page, f.url, f.reference.prompt, 3, { cache: false });
  assert.ok(maxAbs(ranged.logits, f.logits.data) <= f.reference.tolerance_max_abs);
  assert.deepEqual(ranged.tokens, f.reference.greedy.slice(0, 3));
  const names = ['config.json', 'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json',
    ...[1, 2, 3, 4].map((i) => `model-0000${i}-of-00004.safetensors`)];
  const picked = await run(page, names.map((n) => f.url + n), f.reference.prompt, 3);
  assert.ok(maxAbs(picked.logits, f.logits.data) <= f.reference.tolerance_max_abs);
  await page.close();
});

test('the demo page loads the embedded default model and streams its greedy story', async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/web/`);
  assert.equal(await page.inputValue('#url'), '../models/minimax-demo/');
  await page.click('#load');
  await page.waitForFunction(() => !document.getElementById('generate').disabled, null, { timeout: 120_000 });
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '24');
  await page.click('#generate');
  await page.waitForFunction(() => document.getElementById('stop').disabled, null, { timeout: 120_000 });
  const text = await page.textContent('#output');
  assert.match(text, /^Once upon a time, there was a little girl named Emma who loved playing/);
  assert.match(await page.textContent('#speed'), /tokens\/s/);

  // A lost GPU device (provoked: the runtime's devices are destroyed, as a driver reset would
  // lose them) fails the generation under way at once instead of leaving it hanging, and the
  // page says so and offers to reload.
  await page.fill('#max-tokens', '2000');
  await page.click('#generate');
  await page.waitForFunction(() => /tokens\/s/.test(document.getElementById('speed').textContent), null, { timeout: 60_000 });
  assert.ok((await page.evaluate(() => window.minimax.loseDevice())) >= 1, 'the runtime holds a device');
  await page.waitForSelector('#device-lost:not([hidden])', { timeout: 30_000 });
  assert.match(await page.textContent('#lost-message'), /^The GPU device was lost \(destroyed/);
  await page.waitForFunction(() => document.getElementById('stop').disabled, null, { timeout: 30_000 });
  assert.match(await page.textContent('#output'), /\[error: the GPU device was lost/);
  assert.equal(await page.isDisabled('#generate'), true, 'nothing more can run on a lost device');
  await Promise.all([page.waitForEvent('load'), page.click('#reload')]);
  assert.equal(await page.isHidden('#device-lost'), true, 'a reload starts afresh');
  await page.close();
});

/** The demo model converted to a q4 expert pack by the native CLI, under a served path. */
function demoPack() {
  const bin = process.env.MINIMAX_BIN ?? `${repo}target/release/minimax`;
  const dir = `${repo}tests/web/.packs/demo-q4`;
  rmSync(dir, { recursive: true, force: true });
  execFileSync(bin, ['convert', '--model', `${repo}models/minimax-demo`, '--out', dir, '--quant', 'q4'], { stdio: 'ignore' });
  const expected = execFileSync(bin, ['run', '--model', dir, '--backend', 'cpu', '--prompt', 'Once upon a time',
    '--max-tokens', '12', '--format', 'ids'], { encoding: 'utf8' }).trim().split(',').map(Number);
  const pack = JSON.parse(readFileSync(`${dir}/pack.json`, 'utf8'));
  return { url: `${base}/tests/web/.packs/demo-q4/`, expected, slotBytes: Math.ceil(pack.record_bytes / 256) * 256 };
}

test('an expert pack streams experts with Range requests through 3 cache slots, then from OPFS', async () => {
  const p = demoPack();
  const page = await harness();
  const ranges = [];
  page.context().on('request', (r) => {
    if (r.url().endsWith('experts.bin') && r.method() === 'GET') ranges.push(r.headers().range);
  });
  const generate = (options) => page.evaluate(async ({ url, options }) => {
    const mm = new window.MiniMax();
    await mm.load(url, options);
    const out = await mm.generate('Once upon a time', { maxTokens: 12, ignoreEos: true }, () => {});
    const info = await mm.info();
    await mm.free();
    return { tokens: out.tokens, cache: info.expertCache };
  }, { url: p.url, options });
  const resident = await generate({ cache: false });
  assert.deepEqual(resident.tokens, p.expected, 'all resident: same tokens as native');
  assert.equal(resident.cache.slots, 64);
  const threeSlots = { expertCacheMb: (3 * p.slotBytes + 64) / 2 ** 20 };
  ranges.length = 0;
  const streamed = await generate({ cache: false, ...threeSlots });
  console.log(`3 slots, no cache: ${JSON.stringify(streamed.cache)}; ${ranges.length} Range requests`);
  assert.deepEqual(streamed.tokens, p.expected, 'streamed through 3 slots: same tokens');
  assert.equal(streamed.cache.slots, 3);
  assert.ok(streamed.cache.misses > 0 && streamed.cache.evictions > 0, JSON.stringify(streamed.cache));
  // One Range request per record loaded (misses and prefetches), never the whole file.
  assert.equal(ranges.length, streamed.cache.misses + streamed.cache.prefetched);
  assert.ok(ranges.every((r) => /^bytes=\d+-\d+$/.test(r)), JSON.stringify(ranges.slice(0, 3)));
  // With OPFS: the first run fills the second-level cache, the second reads every miss from it.
  await generate({ cache: true, ...threeSlots });
  ranges.length = 0;
  const cached = await generate({ cache: true, ...threeSlots });
  assert.deepEqual(cached.tokens, p.expected);
  assert.ok(cached.cache.misses > 0, JSON.stringify(cached.cache));
  assert.equal(ranges.length, 0, 'every expert record came from OPFS');
  await page.close();
});
