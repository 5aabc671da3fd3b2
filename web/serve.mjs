#!/usr/bin/env node
// A static file server for the demo: serves the repository root (the page is at /web/, the
// demo model at /models/minimax-demo/) on 127.0.0.1 with HTTP Range support, which the
// runtime uses to read weight files tensor by tensor when the browser cannot cache them.
//
//   node web/serve.mjs [--port 8080]     then open http://127.0.0.1:8080/web/
import { createServer } from 'node:http';
import { createReadStream, promises as fs } from 'node:fs';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 8080;
const types = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm',
  '.npy': 'application/octet-stream', '.safetensors': 'application/octet-stream',
};

const server = createServer(async (req, res) => {
  try {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname));
    let file = join(root, path);
    if (!file.startsWith(root)) return end(res, 403);
    let stat = await fs.stat(file).catch(() => null);
    if (stat?.isDirectory()) {
      file = join(file, 'index.html');
      stat = await fs.stat(file).catch(() => null);
    }
    if (!stat?.isFile()) return end(res, 404);
    const headers = {
      'Content-Type': types[extname(file)] ?? 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      'Cache-Control': 'no-cache',
      'ETag': `"${stat.size}-${Math.floor(stat.mtimeMs)}"`,
    };
    const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let last = stat.size - 1;
    let status = 200;
    if (range) {
      start = range[1] === '' ? Math.max(0, stat.size - Number(range[2])) : Number(range[1]);
      last = range[1] !== '' && range[2] !== '' ? Math.min(Number(range[2]), stat.size - 1) : last;
      if (start > last) return end(res, 416, { 'Content-Range': `bytes */${stat.size}` });
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${last}/${stat.size}`;
    }
    headers['Content-Length'] = String(last - start + 1);
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || stat.size === 0) return res.end();
    createReadStream(file, { start, end: last }).pipe(res);
  } catch (e) {
    end(res, 500);
  }
});

function end(res, status, headers = {}) {
  res.writeHead(status, headers);
  res.end();
}

server.listen(port, '127.0.0.1', () => {
  console.log(`serving http://127.0.0.1:${server.address().port}/web/`);
});
