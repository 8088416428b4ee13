// admin.js — the operator's live view: every sale's figures from the SSE
// stream GET /api/v1/admin/events, a chart of the last minutes, and
// create / open / close.

import { call, NetworkError, sleep, num, setText } from './api.js';
import { readEvents } from './sse.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'flashgate.admin';
const WINDOW_S = 300; // the chart's span
const STATE_LABEL = { scheduled: 'Scheduled', open: 'Open', sold_out: 'Sold out', closed: 'Closed' };
const REQUEST_DECISIONS = ['TokenIssued', 'TokenDenied', 'PurchaseAccepted', 'PurchaseRefused'];
const REJECTIONS = ['TokenDenied', 'PurchaseRefused'];

let token = '';
let streamCtl = null; // AbortController of the running stream loop
const cards = new Map(); // sale id -> {el, samples: [{t, sold, rejected}], rates: [{t, sales, rejects}|null]}

// ---------------------------------------------------------------- sign-in

function readToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}

function showLogin(message) {
  stopStream();
  token = '';
  try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* ignore */ }
  $('dash').hidden = true;
  $('sign-out').hidden = true;
  $('login').hidden = false;
  setConn('off', 'offline');
  setText($('login-error'), message || '');
  $('admin-token').value = '';
  $('admin-token').focus();
}

async function signIn(t) {
  const btn = $('login-submit');
  btn.disabled = true;
  setText($('login-error'), '');
  let r;
  try {
    r = await call('GET', '/api/v1/admin/sales', { bearer: t });
  } catch {
    setText($('login-error'), 'Cannot reach the server. Check that flashgate runs, then sign in again.');
    btn.disabled = false;
    return false;
  }
  btn.disabled = false;
  if (r.status === 401) {
    setText($('login-error'), 'That token is not the admin token.');
    return false;
  }
  if (r.status !== 200) {
    setText($('login-error'), `The server answered ${r.status}: ${r.body.message || r.body.error || 'unexpected'}. Try again shortly.`);
    return false;
  }
  token = t;
  try { sessionStorage.setItem(TOKEN_KEY, t); } catch { /* memory only */ }
  $('login').hidden = true;
  $('dash').hidden = false;
  $('sign-out').hidden = false;
  showSales(r.body.sales || [], null);
  startStream();
  return true;
}

// ---------------------------------------------------------------- the stream

function setConn(state, text) {
  const c = $('conn');
  c.dataset.state = state;
  setText(c, text);
}

function stopStream() {
  if (streamCtl) streamCtl.abort();
  streamCtl = null;
}

/** startStream reads the figures stream, reconnecting with backoff (1 s doubling to 30 s, with jitter). */
function startStream() {
  stopStream();
  const ctl = new AbortController();
  streamCtl = ctl;
  (async () => {
    let backoff = 1000;
    while (!ctl.signal.aborted) {
      const attempt = new AbortController();
      const stop = () => attempt.abort();
      ctl.signal.addEventListener('abort', stop);
      let watchdog = 0;
      const alive = () => { // figures come every second: 10 s of silence is a dead connection
        clearTimeout(watchdog);
        watchdog = setTimeout(() => attempt.abort(), 10_000);
      };
      let failure = '';
      try {
        setConn('retry', 'connecting…');
        alive();
        await readEvents('/api/v1/admin/events', {
          headers: { Authorization: 'Bearer ' + token },
          signal: attempt.signal,
          onOpen: () => setConn('live', 'live'),
          onData: alive,
          onEvent: (ev) => {
            if (ev.event !== 'figures') return;
            let msg;
            try { msg = JSON.parse(ev.data); } catch { return; }
            backoff = 1000;
            showSales(msg.sales || [], msg.time);
          },
        });
        failure = 'the stream ended';
      } catch (err) {
        if (ctl.signal.aborted) return;
        if (err.status === 401) { showLogin('The admin token was refused. Sign in again.'); return; }
        failure = err.status === 404 ? 'the live stream is not available on this server (404)'
          : err.status ? `the server answered ${err.status}` : 'the connection dropped';
        if (err.retryAfter) backoff = Math.max(backoff, err.retryAfter * 1000);
      } finally {
        clearTimeout(watchdog);
        ctl.signal.removeEventListener('abort', stop);
        attempt.abort();
      }
      const wait = backoff * (1 + Math.random() * 0.3);
      backoff = Math.min(backoff * 2, 30_000);
      for (let left = Math.ceil(wait / 1000); left > 0 && !ctl.signal.aborted; left--) {
        setConn(failure.includes('404') ? 'error' : 'retry', `offline: ${failure}; retrying in ${left} s`);
        try { await sleep(1000, ctl.signal); } catch { return; }
      }
    }
  })();
}

// ---------------------------------------------------------------- cards

function field(card, name) { return card.querySelector(`[data-field="${name}"]`); }

function cardFor(id) {
  let c = cards.get(id);
  if (c) return c;
  const el = $('sale-card').content.firstElementChild.cloneNode(true);
  el.dataset.sale = id;
  el.querySelector('.sale-id').textContent = id;
  el.querySelector('canvas').setAttribute('aria-label', `sales and rejections per second in ${id}`);
  el.querySelector('[data-action="open"]').addEventListener('click', () => act(id, 'open'));
  el.querySelector('[data-action="close"]').addEventListener('click', () => act(id, 'close'));
  c = { el, samples: [], rates: [] };
  cards.set(id, c);
  // Keep the cards in id order.
  const after = [...cards.keys()].sort().find((k) => k > id);
  $('sales').insertBefore(el, after ? cards.get(after).el : null);
  return c;
}

function sum(decisions, types) {
  let n = 0;
  for (const [k, v] of Object.entries(decisions)) {
    if (types.includes(k.split(':')[0])) n += v;
  }
  return n;
}

function fixed(x, digits) {
  return typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '—';
}

function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return d.toLocaleString();
}

/** showSales updates the cards; time is the figures' RFC 3339 time (null for a plain GET). */
function showSales(sales, time) {
  $('no-sales').hidden = sales.length > 0 || cards.size > 0;
  const t = time ? Date.parse(time) : Date.now();
  for (const s of sales) update(s, time ? t : null);
}

function update(s, t) {
  const c = cardFor(s.id);
  const el = c.el;
  const badge = field(el, 'state');
  badge.dataset.state = s.state;
  setText(badge, STATE_LABEL[s.state] || s.state || '');
  const sched = s.state === 'scheduled' ? `Opens ${when(s.opensAt)}` : `Opened ${when(s.opensAt)}`;
  setText(field(el, 'schedule'), sched + (s.closesAt ? ` · closes ${when(s.closesAt)}` : '') +
    ` · ${s.perUserLimit} per shopper · token TTL ${s.tokenTTL} · quota buffer ${s.quotaBuffer}`);
  for (const k of ['stockLeft', 'stock', 'sold', 'quotaLeft', 'quota', 'tokensOutstanding',
    'tokensIssued', 'tokensRedeemed', 'tokensExpired']) {
    if (k in s) setText(field(el, k), num(s[k]));
  }
  for (const [left, total] of [['stockLeft', 'stock'], ['quotaLeft', 'quota']]) {
    const box = field(el, left);
    box.classList.add('fit');
    box.style.minWidth = Math.max(1, num(s[total]).length) + 'ch'; // no jump as it counts down
  }
  el.querySelector('[data-action="open"]').disabled = !(s.state === 'scheduled' || s.state === 'closed');
  el.querySelector('[data-action="close"]').disabled = !(s.state === 'scheduled' || s.state === 'open');
  // Not yet measured by the server: the waiting room is a later feature.
  setText(field(el, 'queue'), '—');
  setText(field(el, 'admission'), '—');

  if (s.decisions) {
    const rejected = sum(s.decisions, REJECTIONS);
    setText(field(el, 'requests'), num(sum(s.decisions, REQUEST_DECISIONS)));
    setText(field(el, 'rejections'), num(rejected));
    showDecisions(field(el, 'decisions'), s.decisions);
    if (t !== null) addSample(c, t, s.sold, rejected);
  }
  if (s.batches) {
    setText(field(el, 'batchCount'), num(s.batches.count));
    setText(field(el, 'batchAvg'), s.batches.count ? fixed(s.batches.avgRequests, 1) : '—');
    setText(field(el, 'commitMs'), s.batches.avgCommitMs ? fixed(s.batches.avgCommitMs, 1) : '—');
  }
}

function showDecisions(tbody, decisions) {
  const keys = Object.keys(decisions).sort();
  const rows = keys.map((k) => {
    const tr = document.createElement('tr');
    const name = document.createElement('td');
    name.textContent = k;
    const n = document.createElement('td');
    n.className = 'r';
    n.textContent = num(decisions[k]);
    tr.append(name, n);
    return tr;
  });
  tbody.replaceChildren(...rows);
}

// ---------------------------------------------------------------- chart

/** addSample records cumulative figures and derives per-second rates from the previous sample. */
function addSample(c, t, sold, rejected) {
  const prev = c.samples[c.samples.length - 1];
  if (prev && t <= prev.t) return;
  c.samples.push({ t, sold, rejected });
  if (prev) {
    const dt = (t - prev.t) / 1000;
    if (dt > 5) c.rates.push(null); // a gap (reconnect): don't draw across it
    const r = { t, sales: Math.max(0, sold - prev.sold) / dt, rejects: Math.max(0, rejected - prev.rejected) / dt };
    c.rates.push(r);
    setText(field(c.el, 'salesRate'), fixed(r.sales, 1));
    setText(field(c.el, 'rejectRate'), fixed(r.rejects, 1));
  }
  const from = t - WINDOW_S * 1000;
  while (c.samples.length > 2 && c.samples[0].t < from) c.samples.shift();
  while (c.rates.length && (c.rates[0] === null || c.rates[0].t < from)) c.rates.shift();
  draw(c, t);
}

function niceMax(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function draw(c, now) {
  const canvas = c.el.querySelector('canvas');
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const style = getComputedStyle(document.body);
  const fg = style.color;
  const pad = { l: 34, r: 8, t: 8, b: 18 };
  const pw = w - pad.l - pad.r;
  const ph = h - pad.t - pad.b;
  let max = 0;
  for (const r of c.rates) if (r) max = Math.max(max, r.sales, r.rejects);
  max = niceMax(max);
  // The span grows with the history: from 1 minute to WINDOW_S.
  const first = c.samples.length ? c.samples[0].t : now;
  const span = Math.min(WINDOW_S, Math.max(60, Math.ceil((now - first) / 60_000) * 60)) * 1000;
  const x = (t) => pad.l + pw * (1 - (now - t) / span);
  const y = (v) => pad.t + ph * (1 - v / max);

  g.font = '11px system-ui, sans-serif';
  g.fillStyle = fg;
  g.strokeStyle = fg;
  g.globalAlpha = 0.2;
  g.lineWidth = 1;
  g.beginPath();
  for (const v of [0, max / 2, max]) {
    g.moveTo(pad.l, Math.round(y(v)) + 0.5);
    g.lineTo(w - pad.r, Math.round(y(v)) + 0.5);
  }
  g.stroke();
  g.globalAlpha = 0.75;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  g.fillText(String(max), pad.l - 4, y(max));
  g.fillText('0', pad.l - 4, y(0));
  g.textBaseline = 'alphabetic';
  g.textAlign = 'left';
  g.fillText(`−${span / 60_000} min`, pad.l, h - 4);
  g.textAlign = 'right';
  g.fillText('now', w - pad.r, h - 4);
  g.globalAlpha = 1;

  const line = (key, color) => {
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.lineJoin = 'round';
    g.beginPath();
    let pen = false;
    for (const r of c.rates) {
      if (!r || now - r.t > span) { pen = false; continue; }
      if (pen) g.lineTo(x(r.t), y(r[key])); else g.moveTo(x(r.t), y(r[key]));
      pen = true;
    }
    g.stroke();
  };
  line('rejects', '#d93025');
  line('sales', '#1e8e3e');
}

window.addEventListener('resize', () => {
  for (const c of cards.values()) {
    const last = c.samples[c.samples.length - 1];
    if (last) draw(c, last.t);
  }
});

// ---------------------------------------------------------------- actions

function say(text, kind = 'info') {
  const m = $('dash-message');
  m.dataset.kind = kind;
  setText(m, text);
}

async function act(id, what) {
  if (what === 'close' && !confirm(`Close sale “${id}” now? Shoppers can no longer buy.`)) return;
  const el = cards.get(id).el;
  const btn = el.querySelector(`[data-action="${what}"]`);
  btn.disabled = true;
  let r;
  try {
    r = await call('POST', `/api/v1/admin/sales/${encodeURIComponent(id)}/${what}`, { bearer: token });
  } catch {
    say(`Could not reach the server to ${what} “${id}”. Try again.`, 'error');
    btn.disabled = false;
    return;
  }
  if (r.status === 401) { showLogin('The admin token was refused. Sign in again.'); return; }
  if (r.status === 200) {
    update(r.body, null);
    say(what === 'open' ? `Sale “${id}” is open.` : `Sale “${id}” is closed.`, 'ok');
    return;
  }
  if (r.status === 202) { // the writer is slow: the stream shows the change when it is decided
    say(`Asked to ${what} “${id}”; the change shows here once it is decided.`, 'info');
    return;
  }
  btn.disabled = false;
  say(`Could not ${what} “${id}”: ${r.body.message || r.body.error || 'HTTP ' + r.status}.`, 'error');
}

const FIELDS = ['id', 'stock', 'quotaBuffer', 'perUserLimit', 'tokenTTL', 'opensAt', 'closesAt'];

function fieldError(name, text) {
  const input = $('f-' + name);
  const err = $('err-' + name);
  if (!input || !err) return false;
  setText(err, text);
  if (text) input.setAttribute('aria-invalid', 'true'); else input.removeAttribute('aria-invalid');
  return true;
}

function localToRFC3339(v) {
  if (!v) return undefined;
  const d = new Date(v); // a datetime-local value is local time
  return Number.isNaN(d.getTime()) ? v : d.toISOString();
}

async function create(ev) {
  ev.preventDefault();
  for (const f of FIELDS) fieldError(f, '');
  const msg = $('create-message');
  setText(msg, '');
  const v = (n) => $('f-' + n).value.trim();
  const body = { id: v('id'), stock: Number(v('stock')) };
  if (v('quotaBuffer')) body.quotaBuffer = Number(v('quotaBuffer'));
  if (v('perUserLimit')) body.perUserLimit = Number(v('perUserLimit'));
  if (v('tokenTTL')) body.tokenTTL = v('tokenTTL');
  if (v('opensAt')) body.opensAt = localToRFC3339(v('opensAt'));
  if (v('closesAt')) body.closesAt = localToRFC3339(v('closesAt'));
  const btn = $('create-submit');
  btn.disabled = true;
  let r;
  try {
    r = await call('POST', '/api/v1/admin/sales', { bearer: token, body });
  } catch (err) {
    setText(msg, err instanceof NetworkError ? 'Cannot reach the server. Try again.' : String(err));
    btn.disabled = false;
    return;
  }
  btn.disabled = false;
  if (r.status === 401) { showLogin('The admin token was refused. Sign in again.'); return; }
  if (r.status === 201) {
    update(r.body, null);
    $('no-sales').hidden = true;
    setText(msg, `Sale “${r.body.id}” created.`);
    $('f-id').value = '';
    return;
  }
  const text = r.body.message || r.body.error || 'HTTP ' + r.status;
  const name = r.status === 409 ? 'id' : r.body.field;
  if (name && fieldError(name, text)) {
    $('f-' + name).focus();
  } else {
    setText(msg, `Not created: ${text}`);
  }
}

// ---------------------------------------------------------------- start

function main() {
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('admin-token').value.trim();
    if (!t) { setText($('login-error'), 'Enter the admin token.'); return; }
    signIn(t);
  });
  $('sign-out').addEventListener('click', () => showLogin(''));
  $('create-form').addEventListener('submit', create);
  const t = readToken();
  if (t) {
    signIn(t).then((ok) => { if (!ok) { $('login').hidden = false; } });
  } else {
    showLogin('');
  }
}

main();
