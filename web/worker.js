// The Web Worker that owns the wasm runtime, so the page never freezes: model loading and
// generation run here; the page talks to it through `client.js`.
import init, { Session } from './pkg/minimax_web.js';

const ready = init();
let session = null;
const cancelled = new Set();

const post = (message, transfer = []) => self.postMessage(message, transfer);

self.onmessage = async ({ data: { id, method, args } }) => {
  if (method === 'cancel') {
    cancelled.add(args[0]);
    return;
  }
  try {
    await ready;
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
      case 'free':
        if (session) session.free();
        session = null;
        break;
      default:
        throw new Error(`unknown method ${method}`);
    }
    post({ id, result }, transfer);
  } catch (error) {
    post({ id, error: String(error?.message ?? error) });
  }
};
