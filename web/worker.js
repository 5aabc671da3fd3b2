// The Web Worker that owns the wasm runtime, so the page never freezes: model loading and
// generation run here; the page talks to it through `client.js`.
import init, { Session } from './pkg/minimax_web.js';

const post = (message, transfer = []) => self.postMessage(message, transfer);

// A lost GPU device (a driver reset, the browser reclaiming the adapter, `loseDevice` below)
// leaves the runtime unusable, and the work it had queued may never finish. Every device the
// runtime asks for is watched: its loss is posted to the page at once, which fails the calls
// under way rather than leaving them hanging, and every later call fails with the same error.
const devices = [];
let lost = null;
let onLost;
const lostPromise = new Promise((resolve) => (onLost = resolve));
if (self.GPUAdapter) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (...args) {
    const device = await requestDevice.apply(this, args);
    devices.push(device);
    device.lost.then((info) => {
      lost = `the GPU device was lost (${info.reason ?? 'unknown'}${info.message ? `: ${info.message}` : ''})`;
      post({ id: 0, event: 'device-lost', data: { reason: info.reason ?? 'unknown', message: lost } });
      onLost(lost);
    });
    return device;
  };
}

const ready = init();
let session = null;
const cancelled = new Set();

self.onmessage = async ({ data: { id, method, args } }) => {
  if (method === 'cancel') {
    cancelled.add(args[0]);
    return;
  }
  try {
    await ready;
    if (lost) throw new Error(lost);
    let result;
    let transfer = [];
    switch (method) {
      case 'load': {
        const [source, options = {}] = args;
        if (session) {
          session.free();
          session = null;
        }
        session = await Session.load(source, {
          ...options,
          onProgress: (event) => post({ id, event: 'progress', data: event }),
        });
        result = session.info();
        break;
      }
      case 'generate': {
        const [prompt, options = {}] = args;
        const input = typeof prompt === 'string' ? prompt : new Uint32Array(prompt);
        const out = await session.generate(input, options, (token, text) => {
          post({ id, event: 'token', data: { token, text } });
          return !cancelled.has(id);
        });
        cancelled.delete(id);
        result = { tokens: Array.from(out.tokens), text: out.text, stop: out.stop, promptTokens: out.promptTokens };
        break;
      }
      case 'logits': {
        const [ids, prefillChunk] = args;
        result = await session.logits(new Uint32Array(ids), prefillChunk);
        transfer = [result.buffer];
        break;
      }
      case 'info':
        result = session ? session.info() : null;
        break;
      case 'loseDevice':
        // Destroys the runtime's devices, as a driver reset would lose them: for testing how
        // the page copes.
        for (const device of devices) device.destroy();
        result = devices.length;
        break;
      case 'free':
        if (session) session.free();
        session = null;
        break;
      default:
        throw new Error(`unknown method ${method}`);
    }
    post({ id, result }, transfer);
  } catch (error) {
    // A failure caused by a lost device (a read-back the loss aborted, say) often arrives just
    // before the loss itself: name the cause rather than its symptom.
    const cause = lost ?? (await Promise.race([lostPromise, new Promise((resolve) => setTimeout(resolve, 100, null))]));
    post({ id, error: cause ?? String(error?.message ?? error) });
  }
};
