// api.js — the small HTTP client both pages use. Every call answers
// {status, body, retryAfter}; only a failure to reach the server throws
// (NetworkError), so callers handle every HTTP answer in one place.

/** NetworkError: the request did not get an answer (offline, DNS, reset). */
export class NetworkError extends Error {
  constructor(cause) {
    super('network error');
    this.name = 'NetworkError';
    this.cause = cause;
  }
}

/**
 * call sends one request to the API.
 * @param {string} method
 * @param {string} path  absolute path, like /api/v1/time
 * @param {{bearer?: string, headers?: object, body?: any, signal?: AbortSignal}} [opts]
 * @returns {Promise<{status: number, body: object, retryAfter: number|null}>}
 */
export async function call(method, path, opts = {}) {
  const headers = { Accept: 'application/json', ...(opts.headers || {}) };
  if (opts.bearer) headers.Authorization = 'Bearer ' + opts.bearer;
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  let resp, text;
  try {
    resp = await fetch(path, { method, headers, body, signal: opts.signal, cache: 'no-store', credentials: 'omit' });
    text = await resp.text();
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new NetworkError(err);
  }
  let data = {};
  if (text) {
    try { data = JSON.parse(text) || {}; } catch { data = {}; }
  }
  return { status: resp.status, body: data, retryAfter: parseRetryAfter(resp.headers.get('Retry-After')) };
}

/** parseRetryAfter reads a Retry-After header (seconds or an HTTP date) as whole seconds, 1 to 300; null if absent. */
export function parseRetryAfter(v) {
  if (v == null || v === '') return null;
  let s = /^\s*\d+\s*$/.test(v) ? Number(v) : Math.ceil((Date.parse(v) - Date.now()) / 1000);
  if (!Number.isFinite(s)) return null;
  return Math.min(300, Math.max(1, s));
}

/** sleep resolves after ms, or rejects with AbortError when signal aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) { reject(signal.reason); return; }
    const t = setTimeout(() => { if (signal) signal.removeEventListener('abort', onAbort); resolve(); }, ms);
    function onAbort() { clearTimeout(t); reject(signal.reason); }
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
  });
}

const nf = new Intl.NumberFormat('en-US');

/** num formats a count for display ("12,345"); "—" when unknown. */
export function num(n) {
  return typeof n === 'number' && Number.isFinite(n) ? nf.format(n) : '—';
}

/** setText sets an element's text only when it changes (no needless reflow). */
export function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

/** randomID is an id for Idempotency-Key (crypto.randomUUID needs a secure context; this does not). */
export function randomID() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
