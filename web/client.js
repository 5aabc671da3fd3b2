// The page-side API: the same calls as the wasm `Session`, forwarded to `worker.js`.
//
//   const mm = new MiniMax();
//   await mm.load('../models/minimax-demo/', { onProgress });   // or an array of File objects
//   const { tokens, text } = await mm.generate('Once upon a time', { maxTokens: 64 }, onToken);
//   const logits = await mm.logits([1, 2, 3]);                    // Float32Array [T * vocab]
//   mm.onDeviceLost = ({ reason, message }) => ...;                // the GPU device was lost
export class MiniMax {
  constructor(workerUrl = new URL('./worker.js', import.meta.url)) {
    this.worker = new Worker(workerUrl, { type: 'module' });
    this.pending = new Map();
    this.nextId = 1;
    /** Called with `{ reason, message }` when the GPU device is lost; the calls under way fail. */
    this.onDeviceLost = null;
    this.worker.onmessage = ({ data }) => {
      if (data.event === 'device-lost') {
        // The work the runtime had queued may never finish: fail every call now.
        for (const call of this.pending.values()) call.reject(new Error(data.data.message));
        this.pending.clear();
        this.onDeviceLost?.(data.data);
        return;
      }
      const call = this.pending.get(data.id);
      if (!call) return;
      if (data.event) {
        call.handlers[data.event]?.(data.data);
      } else if ('error' in data) {
        this.pending.delete(data.id);
        call.reject(new Error(data.error));
      } else {
        this.pending.delete(data.id);
        call.resolve(data.result);
      }
    };
    this.worker.onerror = (event) => {
      for (const call of this.pending.values()) call.reject(new Error(event.message || 'worker error'));
      this.pending.clear();
    };
  }

  call(method, args, handlers = {}) {
    const id = this.nextId++;
    const promise = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject, handlers }));
    promise.id = id;
    this.worker.postMessage({ id, method, args });
    return promise;
  }

  /** Loads a model from a base URL or `File`s; resolves to `info()`. */
  load(source, { onProgress, ...options } = {}) {
    return this.call('load', [source, options], { progress: onProgress });
  }

  /** Streams tokens into `onToken({ token, text })`; `cancel(promise)` stops it. */
  generate(prompt, options = {}, onToken) {
    const ids = typeof prompt === 'string' ? prompt : Array.from(prompt);
    return this.call('generate', [ids, options], { token: onToken });
  }

  cancel(promise) {
    this.worker.postMessage({ id: 0, method: 'cancel', args: [promise.id] });
  }

  logits(ids, prefillChunk) {
    return this.call('logits', [Array.from(ids), prefillChunk]);
  }

  info() {
    return this.call('info', []);
  }

  /** Destroys the runtime's GPU devices, as a driver reset would (for testing recovery). */
  loseDevice() {
    return this.call('loseDevice', []);
  }

  async free() {
    await this.call('free', []);
    this.worker.terminate();
  }
}
