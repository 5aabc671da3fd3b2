// The demo page: loads a model in the worker, shows progress and the adapter, streams text.
import { MiniMax } from './client.js';

const $ = (id) => document.getElementById(id);
const mm = new MiniMax();
let running = null;
let deviceLost = false;

function showProgress(event) {
  if (event.total > 0) $('progress').value = event.percent;
  const mb = (x) => (x / 1e6).toFixed(1);
  const phases = { download: 'downloading', cached: 'from cache', load: 'uploading to the GPU', device: 'device', ready: 'ready' };
  const what = phases[event.phase] ?? event.phase;
  $('status').textContent = `${what}: ${mb(event.loaded)} / ${mb(event.total)} MB (${event.percent.toFixed(0)} %)` +
    (event.notice ? ` — ${event.notice}` : '');
}

async function load(source) {
  $('generate').disabled = true;
  $('progress').value = 0;
  $('status').textContent = 'starting…';
  try {
    const info = await mm.load(source, { onProgress: showProgress, cache: $('cache').checked });
    const m = info.model;
    $('status').textContent = `Loaded: ${m.layers} layers (${m.layout}), ${m.experts} experts top-${m.topK}, ` +
      `${(m.parameters / 1e6).toFixed(1)} M parameters, ${m.matrixDtype} matrices.`;
    $('progress').value = 100;
    const a = info.adapter;
    $('adapter').textContent = a
      ? `${a.name} (${a.backend}, ${a.type})\nmax buffer ${a.maxBufferSize}, max binding ${a.maxStorageBufferBindingSize}, ` +
        `workgroup storage ${a.maxComputeWorkgroupStorageSize}, shader-f16 ${a.shaderF16}, subgroups ${a.subgroups}`
      : info.device;
    $('generate').disabled = false;
  } catch (e) {
    $('status').textContent = `Error: ${e.message}`;
  }
}

async function generate() {
  const out = $('output');
  out.innerHTML = '';
  const prompt = document.createElement('span');
  prompt.className = 'prompt';
  prompt.textContent = $('prompt').value;
  out.append(prompt);
  const text = document.createTextNode('');
  out.append(text);
  $('generate').disabled = true;
  $('stop').disabled = false;
  let count = 0;
  let first = 0;
  const options = {
    maxTokens: Number($('max-tokens').value),
    temperature: Number($('temperature').value),
    topP: Number($('top-p').value),
    seed: Number($('seed').value),
  };
  try {
    running = mm.generate($('prompt').value, options, ({ text: piece }) => {
      count += 1;
      if (count === 1) first = performance.now();
      text.data += piece;
      if (count > 1) $('speed').textContent = `${((count - 1) / ((performance.now() - first) / 1000)).toFixed(1)} tokens/s`;
    });
    await running;
  } catch (e) {
    text.data += `\n[error: ${e.message}]`;
  } finally {
    running = null;
    $('generate').disabled = deviceLost;
    $('stop').disabled = true;
  }
}

// A lost GPU cannot be recovered in place: say so and offer to reload the page.
mm.onDeviceLost = ({ message }) => {
  deviceLost = true;
  $('lost-message').textContent = `${message[0].toUpperCase()}${message.slice(1)}. Generation stopped.`;
  $('device-lost').hidden = false;
  $('generate').disabled = true;
  $('load').disabled = true;
};
$('reload').onclick = () => location.reload();

$('load').onclick = () => load(new URL($('url').value, location.href).href);
$('folder').onchange = (e) => load(Array.from(e.target.files));
$('generate').onclick = generate;
$('stop').onclick = () => running && mm.cancel(running);
window.minimax = mm;
