// shop.js — the shopper's page: the sale list at / and one sale at
// /sales/{sale}. The countdown runs on the server's clock; the purchase is a
// list of steps (see `steps`) so later features can insert their own.

import { call, NetworkError, sleep, num, setText, randomID } from './api.js';
import { solvePow, captchaToken } from './human.js';
import { readEvents } from './sse.js';

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- clock

/**
 * clock is the server's clock as seen from here: GET /api/v1/time, corrected
 * for half the round trip. The best of three samples (smallest round trip)
 * wins. now() is server time in Unix ms.
 */
export const clock = {
  offset: 0,
  synced: false,
  now() { return Date.now() + this.offset; },
  async sync() {
    let best = null;
    for (let i = 0; i < 3; i++) {
      let r;
      const t0 = performance.now();
      try { r = await call('GET', '/api/v1/time'); } catch { continue; }
      const rtt = performance.now() - t0;
      if (r.status !== 200 || typeof r.body.unixMs !== 'number') continue;
      const offset = r.body.unixMs + rtt / 2 - Date.now();
      if (!best || rtt < best.rtt) best = { rtt, offset };
      if (rtt < 20) break; // good enough
    }
    if (best) {
      this.offset = best.offset;
      this.synced = true;
    }
    return this.synced;
  },
};

// ---------------------------------------------------------------- session and orders (localStorage)

const SESSION_KEY = 'flashgate.session';

function storedSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
    // Keep a minute's margin so a session does not expire mid-purchase.
    if (s && s.session && Date.parse(s.expiresAt) - 60_000 > clock.now()) return s;
  } catch { /* unreadable: make a new one */ }
  return null;
}

function forgetSession() {
  try { localStorage.removeItem(SESSION_KEY); } catch { /* private mode */ }
}

function ordersKey(sale) { return 'flashgate.orders.' + sale; }

/** myOrders is the ids of the orders this shopper placed in sale from this browser. */
function myOrders(sale, shopper) {
  try {
    const o = JSON.parse(localStorage.getItem(ordersKey(sale)) || 'null');
    if (o && o.shopper === shopper && Array.isArray(o.ids)) return o.ids;
  } catch { /* ignore */ }
  return [];
}

function rememberOrder(sale, shopper, id) {
  const ids = myOrders(sale, shopper);
  if (!ids.includes(id)) ids.push(id);
  try { localStorage.setItem(ordersKey(sale), JSON.stringify({ shopper, ids })); } catch { /* ignore */ }
}

// ---------------------------------------------------------------- page state

const S = {
  saleId: '',
  sale: null,        // the last GET /api/v1/sales/{sale}
  opensAtMs: 0,
  closesAtMs: 0,
  preQueueMs: 0,     // when a queue sale's pre-queue takes joins (0: none)
  busy: false,       // a purchase is running
  final: null,       // why buying is over for good here: sold_out | sale_closed | limit_reached | no_sessions
  holdUntil: 0,      // Date.now() before which the button stays disabled (Retry-After, cool-downs)
  retry: false,      // the button reads "Try again"
  loadFailed: false, // the first load failed; the message says so
  order: null,       // the order shown
  orderWatch: null,  // following the order shown: an AbortController
  openTimer: 0,
  tickTimer: 0,
  pollTimer: 0,
  holdTimer: 0,
  preTimer: 0,
  leaveQueue: null,  // the shopper's way out of the queue while in it: () => void
};

const STATE_LABEL = { scheduled: 'Opens soon', open: 'On sale', sold_out: 'Sold out', closed: 'Closed' };

/** effectiveState is the sale's state now by the server's clock: a scheduled sale opens on time even between polls. */
function effectiveState() {
  if (!S.sale) return 'unknown';
  let st = S.sale.state;
  const now = clock.now();
  if (st === 'scheduled' && now >= S.opensAtMs) st = 'open';
  if ((st === 'open' || st === 'scheduled') && S.closesAtMs && now >= S.closesAtMs) st = 'closed';
  return st;
}

// ---------------------------------------------------------------- messages

/**
 * say shows a status message (announced by screen readers): kind is info,
 * wait, ok or error; next is the next step for the shopper.
 */
function say(kind, text, next) {
  const m = $('message');
  m.dataset.kind = kind;
  m.replaceChildren(text);
  if (next) {
    const n = document.createElement('span');
    n.className = 'next';
    n.textContent = next;
    m.append(n);
  }
}

function clearMessage() {
  const m = $('message');
  delete m.dataset.kind;
  m.replaceChildren();
}

// ---------------------------------------------------------------- rendering

function render() {
  const st = effectiveState();
  const badge = $('sale-state');
  badge.dataset.state = st;
  setText(badge, STATE_LABEL[st] || '');

  const s = S.sale || {};
  figure('stock-left', s.stockLeft, 'stock', s.stock);
  figure('quota-left', s.quotaLeft, 'quota', s.quota);

  const scheduled = st === 'scheduled';
  $('countdown-box').hidden = !scheduled;
  if (scheduled) tick(); else clearTimeout(S.tickTimer);

  if (S.final === 'sale_closed' && (st === 'open' || st === 'scheduled')) {
    S.final = null; // the operator opened it again
    if (!S.busy) say('ok', st === 'open' ? 'The sale is open again.' : 'The sale is scheduled again.', st === 'open' ? 'Press Buy.' : '');
  }
  if ((st === 'sold_out' || st === 'closed') && !S.final) {
    S.final = st === 'sold_out' ? 'sold_out' : 'sale_closed';
    if (!S.busy) explainFinal();
  }
  const held = Math.ceil((S.holdUntil - Date.now()) / 1000);
  const buy = $('buy');
  const startable = st === 'open' || preQueueOpen(st);
  let label = BUY_LABEL[S.final] || BUY_LABEL[st] || (s.queue ? 'Join the queue' : 'Buy');
  if (!S.final && S.retry && startable) label = held > 0 ? `Try again (${held})` : 'Try again';
  setText(buy, label);
  buy.disabled = !startable || S.busy || !!S.final || held > 0;
  buy.setAttribute('aria-busy', S.busy ? 'true' : 'false');
}

const BUY_LABEL = { sold_out: 'Sold out', sale_closed: 'Closed', closed: 'Closed', limit_reached: 'Bought' };

/** preQueueOpen reports whether a scheduled queue sale already takes joins (its pre-queue is open). */
function preQueueOpen(st) {
  return st === 'scheduled' && !!S.preQueueMs && clock.now() >= S.preQueueMs;
}

/** notOpenText and notOpenNext explain a sale that takes nothing yet. */
function notOpenText() {
  return S.preQueueMs ? 'The queue has not opened yet.' : 'The sale has not opened yet.';
}

function notOpenNext() {
  if (S.preQueueMs) return `You can join the queue from ${new Date(S.preQueueMs).toLocaleString()}, before the opening.`;
  return `The ${startVerb()} button unlocks when the countdown reaches zero.`;
}

/** startVerb is what the button does: join the queue, or buy. */
function startVerb() { return S.sale?.queue ? 'Join the queue' : 'Buy'; }

/**
 * figure shows "left of total"; the "left" box is as wide as the total, so
 * the layout does not move as it counts down.
 */
function figure(leftId, left, totalId, total) {
  const box = $(leftId);
  setText(box, num(left));
  setText($(totalId), num(total));
  box.style.minWidth = Math.max(2, num(total).length) + 'ch'; // CSSOM, allowed by the CSP (no inline style)
}

function explainFinal() {
  if (S.order && S.final !== 'limit_reached') {
    // The shopper has an order; say the sale ended without hiding it.
    say('info', S.final === 'sold_out' ? 'The sale is now sold out.' : 'The sale has now closed.', 'Your order above is safe.');
    return;
  }
  switch (S.final) {
    case 'sold_out':
      say('error', 'Sold out.', 'Every unit has been sold. Thank you for your patience.');
      break;
    case 'sale_closed':
      say('error', 'This sale has closed.', 'No more purchases are possible.');
      break;
  }
}

/** tick redraws the countdown, on the second boundary of the server's clock. */
function tick() {
  clearTimeout(S.tickTimer);
  const left = Math.max(0, S.opensAtMs - clock.now());
  const secs = Math.ceil(left / 1000); // reaches 0 exactly at opening
  const d = Math.floor(secs / 86400);
  const h = Math.floor(secs / 3600) % 24;
  const m = Math.floor(secs / 60) % 60;
  const s = secs % 60;
  $('cd-days-part').hidden = d === 0;
  setText($('cd-days'), String(d));
  setText($('cd-hours'), String(h).padStart(2, '0'));
  setText($('cd-minutes'), String(m).padStart(2, '0'));
  setText($('cd-seconds'), String(s).padStart(2, '0'));
  $('countdown').setAttribute('aria-label', `${d ? d + ' days ' : ''}${h} hours ${m} minutes ${s} seconds`);
  if (left > 0) S.tickTimer = setTimeout(tick, (left % 1000 || 1000) + 5);
}

/** scheduleOpening unlocks the button at the opening instant by the server's clock. */
function scheduleOpening() {
  clearTimeout(S.openTimer);
  clearTimeout(S.preTimer);
  if (!S.sale || S.sale.state !== 'scheduled') return;
  const pre = S.preQueueMs - clock.now();
  if (S.preQueueMs && pre > 0) S.preTimer = setTimeout(onPreQueue, Math.min(pre, 2 ** 31 - 1));
  const left = S.opensAtMs - clock.now();
  if (left <= 0) { onOpening(); return; }
  // setTimeout overflows past ~24.8 days; wake up and re-plan instead.
  S.openTimer = setTimeout(onOpening, Math.min(left, 2 ** 31 - 1));
}

/** onPreQueue unlocks the button when a queue sale's pre-queue opens. */
function onPreQueue() {
  if (clock.now() < S.preQueueMs) { scheduleOpening(); return; }
  render();
  if (!S.busy && !S.final && !S.order) say('ok', 'The queue is open.', 'Join now: everyone who joins before the opening is put in a random order at the opening.');
}

function onOpening() {
  if (clock.now() < S.opensAtMs) { scheduleOpening(); return; }
  render(); // unlocks now ...
  if (!S.busy && !S.final && !S.order) say('ok', 'The sale is open.', `Press ${startVerb()}.`);
  // ... and confirms with the server (sold out? closed?), spread over half a
  // second: every page reaches the opening at the same server instant.
  setTimeout(refreshSale, Math.random() * 500);
}

// ---------------------------------------------------------------- live figures

function applySale(sale) {
  const first = !S.sale;
  S.sale = sale;
  S.opensAtMs = Date.parse(sale.opensAt) || 0;
  S.closesAtMs = sale.closesAt ? Date.parse(sale.closesAt) || 0 : 0;
  S.preQueueMs = sale.queue && sale.queue.preQueueOpensAt ? Date.parse(sale.queue.preQueueOpensAt) || 0 : 0;
  if (first) {
    document.title = `${sale.id} — flashgate`;
    setText($('sale-title'), sale.id);
  }
  setText($('opens-at'), 'Opens ' + new Date(S.opensAtMs).toLocaleString());
  render();
  scheduleOpening();
}

async function refreshSale() {
  let r;
  try {
    r = await call('GET', `/api/v1/sales/${encodeURIComponent(S.saleId)}`);
  } catch {
    S.pollBackoffMs = Math.min(2 * (S.pollBackoffMs || 2_000), 60_000); // network trouble: poll less
    return false; // the next poll tries again; the buy flow reports network trouble itself
  }
  if (r.status === 429 || r.status === 503) { // busy: wait what the server asks, and longer each time
    S.pollBackoffMs = Math.max(1_000 * (r.retryAfter ?? 1), Math.min(2 * (S.pollBackoffMs || 2_000), 60_000));
    return false;
  }
  S.pollBackoffMs = 0;
  if (r.status === 200) {
    if (S.loadFailed) { S.loadFailed = false; clearMessage(); }
    applySale(r.body);
    return true;
  }
  if (r.status === 404 && !S.sale) {
    $('sale-view').hidden = false;
    setText($('sale-title'), S.saleId);
    S.final = 'not_found';
    say('error', `There is no sale called “${S.saleId}”.`, 'Check the address, or see all sales.');
    render();
  }
  return false;
}

function pollSale() {
  clearTimeout(S.pollTimer);
  // Every open page polls: keep it light. Hidden tab or a sale that is over
  // (sold out or closed; an operator may still reopen it): rarely. Always
  // after any back-off the server asked for, with jitter so pages spread out.
  const over = S.sale && (S.sale.state === 'sold_out' || S.sale.state === 'closed');
  const base = document.hidden || over ? 30_000 : 2_000;
  const every = Math.max(base, S.pollBackoffMs || 0) * (0.8 + 0.4 * Math.random());
  S.pollTimer = setTimeout(async () => {
    await refreshSale();
    pollSale();
  }, every);
}

// ---------------------------------------------------------------- the purchase

/** Failure stops the purchase with what the server said. */
class Failure extends Error {
  constructor(status, body) {
    super((body && body.error) || 'http_' + status);
    this.status = status;
    this.body = body || {};
    this.code = this.body.error || '';
  }
}

/** Restart runs the purchase again from a step (a new session, a new token). */
class Restart extends Error {
  constructor(from, note) { super('restart from ' + from); this.from = from; this.note = note; }
}

/** Busy is a 429 or 503 that came back after the automatic retry. */
class Busy extends Error {
  constructor(seconds) { super('busy'); this.seconds = seconds; }
}

/**
 * send is call() for the purchase: a 429 or 503 waits Retry-After seconds
 * (shown as a countdown) and is retried once, automatically; a second one
 * throws Busy, so nobody hammers the server.
 */
async function send(method, path, opts) {
  for (let attempt = 0; ; attempt++) {
    const r = await call(method, path, opts);
    if (r.status !== 429 && r.status !== 503) return r;
    const wait = r.retryAfter ?? 1;
    if (attempt >= 1) throw new Busy(wait);
    for (let s = wait; s > 0; s--) {
      say('wait', 'The shop is very busy right now.', `Trying again automatically in ${s} s…`);
      await sleep(1000);
    }
  }
}

/**
 * pollRequest follows a 202 {"requestId","status":"pending"} until it is
 * decided, and returns the decision shaped like a direct answer.
 */
async function pollRequest(ctx, id) {
  const deadline = Date.now() + 30_000;
  for (let delay = 250; Date.now() < deadline; delay = Math.min(2 * delay, 2000)) {
    await sleep(delay);
    const r = await send('GET', `/api/v1/requests/${encodeURIComponent(id)}`, { bearer: ctx.session });
    if (r.status === 404) continue; // not visible yet
    if (r.status === 401) { forgetSession(); throw new Restart('session'); }
    if (r.status !== 200) throw new Failure(r.status, r.body);
    switch (r.body.status) {
      case 'pending': continue;
      case 'issued': return { status: 201, body: r.body };
      case 'joined': return { status: 200, body: r.body };
      case 'accepted': return { status: 202, body: r.body };
      case 'refused': return { status: r.body.httpStatus || 400, body: r.body };
    }
  }
  throw new Failure(0, { error: 'slow', message: 'no decision yet' });
}

async function stepSession(ctx) {
  const s = storedSession();
  if (s) { ctx.session = s.session; ctx.shopper = s.shopper; return; }
  say('info', 'Starting your session…');
  const r = await send('POST', '/api/v1/session');
  if (r.status !== 201) throw new Failure(r.status, r.body);
  try { localStorage.setItem(SESSION_KEY, JSON.stringify(r.body)); } catch { /* private mode: session lives in memory */ }
  ctx.session = r.body.session;
  ctx.shopper = r.body.shopper;
}

/**
 * stepChallenge passes the sale's human check, if it has one: a puzzle the
 * browser solves (about a second) or the CAPTCHA. The solution is good for
 * one token request.
 */
async function stepChallenge(ctx) {
  ctx.solution = null;
  // Ask the server whenever the sale shows a check, or the server asked for
  // one (the cached sale may be older than the check).
  if (!S.sale?.challenge && !ctx.checkAsked) return;
  say('info', 'Checking that you are a person…');
  const r = await send('POST', `/api/v1/sales/${encodeURIComponent(ctx.sale)}/challenge`, { bearer: ctx.session });
  if (r.status === 401 && r.body.error === 'unauthenticated') { forgetSession(); throw new Restart('session'); }
  if (r.status === 200 && r.body.kind === 'none') return;
  if (r.status === 201 && r.body.kind === 'pow') {
    say('info', 'Checking that you are a person…', 'Your browser is solving a small puzzle; this takes about a second.');
    try {
      ctx.solution = await solvePow(r.body);
    } catch (err) {
      throw new Failure(0, { error: 'challenge_unsolved', message: err.message });
    }
    return;
  }
  if (r.status === 200 && r.body.kind === 'captcha') {
    say('info', 'Please confirm that you are a person.');
    try {
      ctx.solution = await captchaToken($('captcha'), r.body);
    } catch (err) {
      throw new Failure(0, { error: 'challenge_unsolved', message: err.message });
    }
    return;
  }
  throw new Failure(r.status, r.body);
}

async function stepToken(ctx) {
  say('info', 'Asking for a purchase token…');
  const headers = ctx.solution ? { 'X-Challenge-Solution': ctx.solution } : undefined;
  ctx.solution = null; // good once
  let r = await send('POST', `/api/v1/sales/${encodeURIComponent(ctx.sale)}/tokens`, { bearer: ctx.session, headers });
  if (r.status === 202 && r.body.status === 'pending') {
    say('info', 'Asking for a purchase token…', 'Many shoppers at once — hold on, your place is kept.');
    r = await pollRequest(ctx, r.body.requestId);
  }
  if ((r.status === 200 || r.status === 201) && r.body.token) {
    ctx.token = r.body.token;
    return;
  }
  if (r.status === 401 && r.body.error === 'unauthenticated') { forgetSession(); throw new Restart('session'); }
  if (r.body.error === 'challenge_required' || r.body.error === 'challenge_failed') {
    ctx.checkAsked = true;
    throw new Restart('challenge', 'One more check…');
  }
  throw new Failure(r.status, r.body);
}

// ---------------------------------------------------------------- the waiting room

/** eta says how long about: "in under a minute", "about 3 min". */
function eta(seconds) {
  if (seconds < 60) return 'in under a minute';
  return `about ${num(Math.round(seconds / 60))} min`;
}

/** showPosition shows a waiting ticket: {position, ahead, etaSeconds} (null before the draw). */
function showPosition(p) {
  $('queue').hidden = false;
  if (p.position == null) {
    setText($('queue-position'), '—');
    sayOnce('wait', 'You are in the queue.', 'The order is drawn at the opening, at random among everyone who joined before it.');
    return;
  }
  setText($('queue-position'), num(p.position));
  let text = p.ahead === 0 ? 'You are in the queue — you are next' : `You are in the queue — ${num(p.ahead)} ahead of you`;
  if (p.etaSeconds != null) text += `, ${eta(p.etaSeconds)}`;
  sayOnce('wait', text + '.', p.etaSeconds != null ? 'The time is an estimate from how fast the queue moves.' : '');
}

/** sayOnce is say() that leaves the message alone when it would not change (it is read out). */
function sayOnce(kind, text, next) {
  const m = $('message');
  if (m.dataset.kind === kind && m.textContent === text + (next || '')) return;
  say(kind, text, next);
}

function hideQueue() {
  $('queue').hidden = true;
  S.leaveQueue = null;
}

/** ended turns a ticket's final state ({status, reason}) into the Failure that explains it. */
function ended(d) {
  switch (d.status) {
    case 'sold_out': return new Failure(410, { error: 'sold_out' });
    case 'closed': return new Failure(410, { error: 'sale_closed' });
    case 'expired': return new Failure(0, { error: 'queue_expired', reason: d.reason });
    case 'left': return new Failure(0, { error: 'queue_left', reason: d.reason });
    case 'claimed': return new Failure(0, { error: 'queue_claimed', reason: d.reason });
  }
  return new Failure(0, { error: 'queue_' + d.status });
}

/** STREAM_SILENCE_MS: a stream that sends nothing (no event, no keep-alive comment, every 15 s) this long is dead. */
const STREAM_SILENCE_MS = 25_000;
/** NOT_FOUND_TRIES: a ticket answered 404 this many times in a row is gone (before that, another server may be a moment behind). */
const NOT_FOUND_TRIES = 3;

/**
 * streamOnce reads one connection to the event stream at url + '/events'
 * with the session (fetch: EventSource cannot send the header), from
 * Last-Event-ID lastId. onEvent(name, data) gets each event's parsed JSON
 * and returns true when it has what it waited for, which closes the
 * connection. The connection also closes when signal aborts or it is silent
 * for STREAM_SILENCE_MS. It resolves, never rejects, with {events, lastId,
 * status, retryAfterMs}: how many events came, the last event id, and for a
 * refused stream its HTTP status and the wait it asked for (status 0: the
 * stream ended, was closed, or the network failed).
 */
async function streamOnce(url, { session, lastId, signal, onEvent }) {
  const got = { events: 0, lastId, status: 0, retryAfterMs: 0 };
  const conn = new AbortController();
  const stop = () => conn.abort();
  signal.addEventListener('abort', stop, { once: true });
  let watchdog = 0;
  const alive = () => {
    clearTimeout(watchdog);
    watchdog = setTimeout(stop, STREAM_SILENCE_MS); // silent: the caller reconnects with Last-Event-ID
  };
  alive();
  try {
    await readEvents(url + '/events', {
      headers: { Authorization: 'Bearer ' + session, ...(got.lastId ? { 'Last-Event-ID': got.lastId } : {}) },
      signal: conn.signal,
      onOpen: alive,
      onData: alive,
      onEvent(ev) {
        got.events++;
        if (ev.id) got.lastId = ev.id;
        let data;
        try { data = JSON.parse(ev.data); } catch { return; }
        if (onEvent(ev.event, data)) stop();
      },
    });
  } catch (err) {
    if (err.status) {
      got.status = err.status;
      got.retryAfterMs = 1_000 * (err.retryAfter || 1);
    }
  } finally {
    clearTimeout(watchdog);
    signal.removeEventListener('abort', stop);
  }
  return got;
}

/**
 * followTicket follows the ticket until its turn and resolves with the
 * admission ({token, tokenId, expiresAt, claimBy}); a final state throws
 * the Failure that explains it. It listens to the ticket's event stream
 * (fetch with the session; reconnecting with Last-Event-ID and a growing
 * pause, or after Retry-After on 429/503; a stream silent for 25 s is
 * dropped and reconnected) and, if the stream keeps failing, polls the
 * ticket every 5 s (or after Retry-After). A 404 is final only after three
 * in a row a few seconds apart: a join taken by another server may not
 * have reached this one yet.
 */
async function followTicket(ctx) {
  const url = `/api/v1/sales/${encodeURIComponent(ctx.sale)}/queue/${encodeURIComponent(ctx.ticket)}`;
  const out = new AbortController(); // the shopper left
  S.leaveQueue = () => {
    out.abort();
    call('DELETE', url, { bearer: ctx.session }).catch(() => { /* the turn passes by itself */ });
  };
  let lastId = '';
  let failures = 0; // streams in a row that failed before an event
  let missing = 0; // 404s in a row
  let polling = typeof TextDecoderStream === 'undefined';
  for (let attempt = 0; ; attempt++) {
    let outcome = null; // {admitted} or {done}
    let notFound = false;
    let asked = 0; // ms the server asked to wait (Retry-After on 429/503)
    const seen = (name, data) => {
      if (name === 'admitted' && data.token) outcome = { admitted: data };
      else if (name === 'done') outcome = { done: data };
      else if (name === 'position') showPosition(data);
    };
    if (!polling) {
      const got = await streamOnce(url, {
        session: ctx.session, lastId, signal: out.signal,
        onEvent(name, data) { seen(name, data); return !!outcome; },
      });
      lastId = got.lastId;
      if (!outcome && !out.signal.aborted) {
        if (got.status === 401) { forgetSession(); throw new Restart('session'); }
        if (got.status === 404) notFound = true;
        if (got.status === 429 || got.status === 503) asked = got.retryAfterMs;
      }
      if (got.events) missing = 0;
      failures = got.events ? 0 : failures + 1;
      if (failures >= 3 && !notFound) polling = true; // the stream does not get through (a proxy, a full server): poll
    } else {
      let r = null;
      try { r = await call('GET', url, { bearer: ctx.session, signal: out.signal }); } catch { /* offline or left: try again */ }
      if (r && r.status === 200) {
        missing = 0;
        if (r.body.status === 'admitted' && r.body.token) outcome = { admitted: r.body };
        else if (r.body.status === 'waiting') showPosition(r.body);
        else outcome = { done: r.body };
      } else if (r && r.status === 401) {
        forgetSession();
        throw new Restart('session');
      } else if (r && r.status === 404) {
        notFound = true;
      } else if (r && (r.status === 429 || r.status === 503)) {
        asked = 1_000 * (r.retryAfter ?? 1);
      }
    }
    if (out.signal.aborted) throw new Failure(0, { error: 'queue_left', reason: 'left' });
    if (outcome && outcome.admitted) return outcome.admitted;
    if (outcome && outcome.done) throw ended(outcome.done);
    if (notFound && ++missing >= NOT_FOUND_TRIES) throw new Failure(404, { error: 'ticket_not_found' });
    // Reconnect after a pause that grows (1, 2, 4 … 30 s, with jitter); poll every 5 s; after a 404,
    // 2-3 s; never sooner than the server asked.
    let pause = polling ? 5_000 : Math.min(30_000, 1_000 * 2 ** Math.min(failures, 5)) * (0.75 + 0.5 * Math.random());
    if (notFound) pause = 2_000 + 1_000 * Math.random();
    pause = Math.max(pause, asked);
    try { await sleep(pause, out.signal); } catch { /* left: said above on the next turn */ }
    if (out.signal.aborted) throw new Failure(0, { error: 'queue_left', reason: 'left' });
  }
}

/**
 * stepQueue joins the sale's waiting room (spending the human check's
 * solution, if any) and waits for the turn; the admission's token goes to
 * ctx.token for the purchase.
 */
async function stepQueue(ctx) {
  say('info', 'Joining the queue…');
  const headers = ctx.solution ? { 'X-Challenge-Solution': ctx.solution } : undefined;
  ctx.solution = null; // good once
  let r = await send('POST', `/api/v1/sales/${encodeURIComponent(ctx.sale)}/queue`, { bearer: ctx.session, headers });
  if (r.status === 202 && r.body.status === 'pending' && !r.body.ticket) {
    say('info', 'Joining the queue…', 'Many shoppers at once — hold on, your request is kept.');
    r = await pollRequest(ctx, r.body.requestId);
  }
  if (r.status === 401 && r.body.error === 'unauthenticated') { forgetSession(); throw new Restart('session'); }
  if (r.body.error === 'challenge_required' || r.body.error === 'challenge_failed') {
    ctx.checkAsked = true;
    throw new Restart('challenge', 'One more check…');
  }
  if (!r.body.ticket || r.body.error) throw new Failure(r.status, r.body);
  ctx.ticket = r.body.ticket;
  if (r.body.status === 'waiting') showPosition(r.body);
  else $('queue').hidden = false;
  try {
    const admission = await followTicket(ctx);
    ctx.token = admission.token;
    say('ok', 'It is your turn!', `Buying now — your token is good until ${new Date(admission.expiresAt).toLocaleTimeString()}.`);
  } finally {
    hideQueue();
  }
}

async function stepPurchase(ctx) {
  say('info', 'Buying…');
  ctx.idempotencyKey ||= randomID();
  let r = await send('POST', `/api/v1/sales/${encodeURIComponent(ctx.sale)}/purchases`, {
    bearer: ctx.session,
    headers: { 'X-Purchase-Token': ctx.token, 'Idempotency-Key': ctx.idempotencyKey },
  });
  if (r.status === 202 && r.body.status === 'pending') {
    say('info', 'Buying…', 'Many shoppers at once — hold on, your token is kept.');
    r = await pollRequest(ctx, r.body.requestId);
  }
  if (r.body.status === 'accepted' && r.body.orderId) { ctx.orderId = r.body.orderId; return; }
  switch (r.body.error) {
    case 'token_used':
      if (r.body.orderId) { ctx.orderId = r.body.orderId; return; } // this token bought an order already
      break;
    case 'unauthenticated':
      forgetSession();
      throw new Restart('session');
    case 'token_expired':
      throw new Restart('challenge', 'Your purchase token expired; asking for a new one…');
    case 'token_invalid':
    case 'token_required':
    case 'token_not_yours':
    case 'token_wrong_sale':
      throw new Restart('challenge', 'Your purchase token was not accepted; asking for a new one…');
  }
  throw new Failure(r.status, r.body);
}

async function stepOrder(ctx) {
  rememberOrder(ctx.sale, ctx.shopper, ctx.orderId);
  // The order is decided and stored; from here on it stands, whatever
  // happens to its trip to the provider (followed in the background).
  showOrder(ctx.orderId, ctx.session);
  if (myOrders(ctx.sale, ctx.shopper).length >= (S.sale?.perUserLimit ?? 1)) S.final = 'limit_reached';
}

function showOrder(id, session) {
  showOrderQuietly(id, session, true);
  say('ok', `Order placed — number ${id}.`, 'Keep this number. Buying again with the same token never charges twice.');
}

/**
 * steps is the purchase, in order. Each step is async (ctx) => void and
 * fills ctx for the next; ctx = {sale, session, shopper, token, orderId}. A
 * step that needs the shopper's attention throws Failure; one that must go
 * back throws Restart(stepName). Later features insert steps by name, e.g.
 *   steps.splice(steps.findIndex((s) => s.name === 'token'), 0, { name: 'waiting-room', run: waitInRoom });
 */
export const steps = [
  { name: 'session', run: stepSession },
  { name: 'challenge', run: stepChallenge },
  // The waiting room goes here, between the human check and the token (see planFor).
  { name: 'token', run: stepToken },
  { name: 'purchase', run: stepPurchase },
  { name: 'order', run: stepOrder },
];

/**
 * planFor is the purchase for a sale: for a sale with a waiting room, the
 * queue step takes the token step's place (the token comes by admission):
 * session -> challenge -> queue -> purchase -> order.
 */
function planFor(sale) {
  if (!sale || !sale.queue) return steps;
  const plan = steps.slice();
  plan.splice(plan.findIndex((s) => s.name === 'token'), 1, { name: 'queue', run: stepQueue });
  return plan;
}

async function purchase() {
  if (S.busy || Date.now() < S.holdUntil) return;
  S.busy = true;
  S.retry = false;
  clearInterval(S.holdTimer);
  render();
  const ctx = { sale: S.saleId };
  const plan = planFor(S.sale);
  let restarts = 0;
  try {
    for (let i = 0; i < plan.length;) {
      try {
        await plan[i].run(ctx);
        i++;
      } catch (err) {
        if (!(err instanceof Restart) || ++restarts > 2) throw err;
        if (err.note) say('info', err.note);
        i = plan.findIndex((s) => s.name === err.from);
      }
    }
  } catch (err) {
    failed(err);
  } finally {
    S.busy = false;
    render();
  }
}

/**
 * offerRetry turns the button into "Try again", locked for `seconds` with a
 * countdown on it, so a shopper cannot hammer the server.
 */
function offerRetry(seconds = 0) {
  S.retry = true;
  clearInterval(S.holdTimer);
  S.holdUntil = Date.now() + seconds * 1000;
  if (seconds > 0) {
    S.holdTimer = setInterval(() => {
      if (Date.now() >= S.holdUntil) clearInterval(S.holdTimer);
      render();
    }, 250);
  }
}

/** failed tells the shopper what went wrong and what to do next. */
function failed(err) {
  if (err instanceof NetworkError) {
    say('error', 'We could not reach the shop.', 'Check your connection, then try again.');
    offerRetry(2);
    return;
  }
  if (err instanceof Busy) {
    say('wait', 'The shop is still too busy.', `Please wait — you can try again in ${err.seconds} s.`);
    offerRetry(err.seconds);
    return;
  }
  if (err instanceof Restart) {
    say('error', 'We could not get a valid purchase token.', 'Try again in a moment.');
    offerRetry(3);
    return;
  }
  if (!(err instanceof Failure)) {
    console.error(err);
    say('error', 'Something went wrong on this page.', 'Reload the page and try again.');
    return;
  }
  const b = err.body;
  switch (err.code) {
    case 'sold_out':
      S.final = 'sold_out';
      say('error', 'Sold out.', 'Every unit has been sold. Thank you for your patience.');
      refreshSale();
      return;
    case 'sale_closed':
      S.final = 'sale_closed';
      say('error', 'This sale has closed.', 'No more purchases are possible.');
      refreshSale();
      return;
    case 'quota_exhausted':
      say('wait', 'All tokens are held right now.', 'Some may come back — try again in a minute.');
      offerRetry(5);
      return;
    case 'not_open':
      if (b.opensAt) S.opensAtMs = Date.parse(b.opensAt) || S.opensAtMs;
      if (S.sale) S.sale.state = 'scheduled';
      if (b.preQueueOpensAt) S.preQueueMs = Date.parse(b.preQueueOpensAt) || S.preQueueMs;
      S.holdUntil = Date.now() + 500; // our clock was a hair early: let the resync settle
      say('info', notOpenText(), notOpenNext());
      setTimeout(render, 550);
      clock.sync().then(() => { render(); scheduleOpening(); });
      return;
    case 'limit_reached': {
      S.final = 'limit_reached';
      const ids = myOrders(S.saleId, storedSession()?.shopper);
      say('info', 'You have already bought the most this sale allows' +
        (S.sale ? ` (${S.sale.perUserLimit} per shopper).` : '.'),
        ids.length ? `Your order: ${ids.join(', ')}.` : 'Your earlier order stands.');
      if (ids.length && !S.order) showOrderQuietly(ids[ids.length - 1], storedSession()?.session);
      return;
    }
    case 'token_expired':
      say('error', 'Your purchase token expired before you could buy.', 'Ask for a new token.');
      offerRetry();
      return;
    case 'anonymous_sessions_disabled':
      S.final = 'no_sessions';
      say('error', 'This shop signs shoppers in with its own accounts.', 'Sign in on the shop’s site first.');
      return;
    case 'challenge_unsolved':
      say('error', 'The check that you are a person did not finish.', `${b.message || 'Please try again'}.`);
      offerRetry(2);
      return;
    case 'slow':
      say('wait', 'Your request is taking longer than usual.', 'Try again — asking twice is safe, you will not buy twice.');
      offerRetry(2);
      return;
    case 'queue_expired':
      if (b.reason === 'idle') say('error', 'Your turn passed while the page was closed.', 'Join again — you will join at the back of the queue.');
      else say('error', 'Your turn passed before the purchase started.', 'Join again — you will join at the back of the queue.');
      offerRetry();
      return;
    case 'queue_left':
      if (b.reason === 'limit_reached') say('info', 'Your turn was skipped: you already hold a purchase token or bought the most this sale allows.', 'Use the token you hold, or see your order.');
      else say('info', 'You left the queue.', 'Join again whenever you like — at the back of the queue.');
      offerRetry();
      return;
    case 'queue_claimed':
      if (b.reason === 'bought') {
        S.final = 'limit_reached';
        say('info', 'Your turn was used to buy, in another window.', 'See your order there.');
      } else {
        say('error', 'The purchase token from your turn has expired.', 'Join the queue again.');
        offerRetry();
      }
      return;
    case 'ticket_not_found':
      say('error', 'Your place in the queue is no longer known.', 'Join the queue again.');
      offerRetry(2);
      return;
    case 'queue_required':
      say('info', 'This sale has a waiting room.', 'Press Join the queue.');
      refreshSale();
      offerRetry();
      return;
  }
  say('error', `Something went wrong (${err.code || 'HTTP ' + err.status}).`, b.message ? `${b.message}. Try again in a moment.` : 'Try again in a moment.');
  offerRetry(3);
}

// ---------------------------------------------------------------- the order at the provider

/**
 * showOrderQuietly shows order id in the order box and follows it on its
 * way to the provider with the session (none: the number only). bought: the
 * shopper has just bought it, so it is accepted. An order already shown is
 * left alone.
 */
function showOrderQuietly(id, session, bought = false) {
  if (S.order === id) return;
  S.order = id;
  $('order').hidden = false;
  setText($('order-id'), id);
  setText($('order-detail'), bought ? 'Its details will appear here shortly.' : '');
  const line = $('order-status');
  line.hidden = true;
  delete line.dataset.status;
  if (bought) showOrderState({ orderId: id, status: 'accepted' });
  watchOrder(id, session);
}

/** clockTime is an instant (an ISO time or Unix ms) as HH:MM:SS on this device's clock face. */
function clockTime(t) {
  const d = new Date(typeof t === 'number' ? t : Date.parse(t));
  if (Number.isNaN(d.getTime())) return '—';
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

/** FAILED_BECAUSE says why the fulfilment gave up on an order (its failedReason). */
const FAILED_BECAUSE = {
  attempts: 'the provider did not take it after several tries',
  deadline: 'it took too long to reach the provider',
  rejected: 'the provider turned it down',
};

/**
 * orderLine is the status line for an order's JSON: [text, next, ref], next
 * being what it means for the shopper ('' if nothing to add) and ref the
 * provider's reference, which ends the text.
 */
function orderLine(o) {
  switch (o.status) {
    case 'accepted':
      return ['Order accepted — sending it to the provider…', ''];
    case 'retrying':
      return [`Retrying (attempt ${(o.attempts || 0) + 1})…`,
        o.retryAt ? `The last try did not go through; the next is at ${clockTime(o.retryAt)}. Your order is safe.` : 'The last try did not go through. Your order is safe.'];
    case 'delayed':
      return [`Delayed — the provider asks us to wait until ${clockTime(o.delayedUntil)}; your order is safe and will be sent then.`, ''];
    case 'confirmed':
      return [o.reference ? 'Confirmed — reference ' : 'Confirmed', 'The provider has your order. There is nothing more to do.', o.reference || ''];
    case 'failed':
      return [`Failed — we could not place it (${FAILED_BECAUSE[o.failedReason] || 'the provider did not take it'}); support has been told.`,
        'Your order stands: support will send it again, and this line will show when it goes through.'];
    case 'pending':
      return ['Pending — being sent again…', ''];
    case 'lost':
      return ['We cannot see where this order stands right now.', 'Your order stands. Reload the page later to see its progress.'];
  }
  return ['Order accepted — its progress will show here.', ''];
}

/** showOrderState shows an order's JSON (from its stream or GET) in the order box. */
function showOrderState(o) {
  if (!o || (o.orderId && o.orderId !== S.order)) return;
  if (typeof o.units === 'number' && Date.parse(o.createdAt)) {
    const units = o.units === 1 ? '1 unit' : `${num(o.units)} units`;
    setText($('order-detail'), `${units} · placed ${new Date(o.createdAt).toLocaleTimeString()}`);
  }
  const [text, next, ref] = orderLine(o);
  const line = $('order-status');
  line.dataset.status = o.status;
  line.hidden = false;
  // Unchanged text is not set again, so the live region does not read it out again.
  const state = $('order-state');
  if (state.textContent !== text + (ref || '')) {
    state.replaceChildren(text);
    if (ref) {
      const r = document.createElement('span');
      r.className = 'ref'; // kept on one line
      r.textContent = ref;
      state.append(r);
    }
  }
  setText($('order-next'), next);
}

/** ORDER_POLL_MS: how often an order is polled when its stream does not get through. */
const ORDER_POLL_MS = 3_000;
/** ORDER_NOT_FOUND_TRIES: an order stream answered 404 this many times in a row (0.5, 1, 2 s apart) is polled instead: right after buying, the order may not be visible to this server yet. */
const ORDER_NOT_FOUND_TRIES = 4;
/** ORDER_UNKNOWN_MS: an order still unknown (404) this long is not followed any more. */
const ORDER_UNKNOWN_MS = 60_000;

/** orderPollMs is how long to wait before polling an order again, given what it was last. */
function orderPollMs(o) {
  let ms = ORDER_POLL_MS;
  if (o && o.status === 'failed') ms = 30_000; // nothing moves until support acts
  if (o && o.status === 'delayed') { // nothing moves before the ban ends
    const left = Date.parse(o.delayedUntil) - clock.now();
    if (left > ms) ms = Math.min(15_000, left);
  }
  if (document.hidden) ms = Math.max(ms, 15_000);
  return ms * (0.8 + 0.4 * Math.random());
}

/** watchOrder follows order id from now on, and stops following the order shown before. */
function watchOrder(id, session) {
  if (S.orderWatch) S.orderWatch.abort();
  S.orderWatch = null;
  if (!session) return;
  const ctl = new AbortController();
  S.orderWatch = ctl;
  followOrder(id, session, ctl.signal).catch((err) => {
    if (!ctl.signal.aborted) console.error(err);
  });
}

/**
 * followOrder shows order id's progress until it is confirmed (or signal
 * aborts). It listens to the order's event stream (events "order", the
 * order's JSON; the stream ends after "confirmed"), reconnecting after a
 * pause that grows (1, 2, 4 … 30 s, with jitter). It polls GET
 * /api/v1/orders/{id} instead, every few seconds, when the stream is
 * refused (429, 503: too many streams), or fails three times in a row, or
 * the order is still not found after a few tries with back-off; polls honour
 * Retry-After. An order unknown for a minute, or a session that has ended,
 * is not followed any more: the order stands, the line says to reload later.
 */
async function followOrder(id, session, signal) {
  const url = `/api/v1/orders/${encodeURIComponent(id)}`;
  let last = null; // the order as last seen
  const seen = (o) => {
    last = o;
    showOrderState(o);
    return o.status === 'confirmed';
  };
  let lastId = '';
  let failures = 0; // streams in a row that brought no event
  let missing = 0; // 404s in a row
  let unknownSince = 0; // Date.now() of the first of those 404s
  let offline = 0; // polls in a row that got no answer
  let polling = typeof TextDecoderStream === 'undefined';
  for (;;) {
    let status = 0; // the HTTP status, when the answer was not the order
    let known = false; // the answer was the order
    let asked = 0; // ms the server asked to wait (Retry-After)
    let pause;
    if (!polling) {
      const got = await streamOnce(url, {
        session, lastId, signal,
        onEvent: (name, data) => name === 'order' && seen(data),
      });
      lastId = got.lastId;
      status = got.status;
      known = got.events > 0;
      failures = known ? 0 : failures + 1;
      if (known) missing = 0;
      if (status === 429 || status === 503) {
        polling = true; // the server has too many streams, and says to poll
        pause = 0;
      } else if (status === 404) {
        if (++missing >= ORDER_NOT_FOUND_TRIES) polling = true;
        pause = polling ? orderPollMs(last) : 500 * 2 ** (missing - 1);
      } else if (failures >= 3) {
        polling = true; // the stream does not get through (a proxy, a full server)
        pause = 0;
      } else {
        pause = Math.min(30_000, 1_000 * 2 ** Math.min(failures, 5)) * (0.75 + 0.5 * Math.random());
      }
    } else {
      let r = null;
      try { r = await call('GET', url, { bearer: session, signal }); } catch { /* offline, or stopped */ }
      if (r && r.status === 200) {
        known = true;
        seen(r.body);
      } else if (r) {
        status = r.status;
      }
      if (r && (r.status === 429 || r.status === 503)) asked = 1_000 * (r.retryAfter ?? 1);
      offline = r ? 0 : offline + 1;
      pause = Math.max(offline ? Math.min(30_000, ORDER_POLL_MS * 2 ** offline) : orderPollMs(last), asked);
    }
    if (signal.aborted || (last && last.status === 'confirmed')) return;
    if (status === 401) { // the session has ended: the order stands, this page cannot follow it
      showOrderState({ orderId: id, status: 'lost' });
      return;
    }
    if (status === 404) {
      unknownSince ||= Date.now();
      if (Date.now() - unknownSince >= ORDER_UNKNOWN_MS) {
        showOrderState({ orderId: id, status: 'lost' });
        return;
      }
    } else if (known || status) {
      unknownSince = 0;
    }
    try { await sleep(pause, signal); } catch { return; }
  }
}

// ---------------------------------------------------------------- the sale list

function saleLink(s) {
  const li = document.createElement('li');
  const a = document.createElement('a');
  a.href = '/sales/' + encodeURIComponent(s.id);
  const name = document.createElement('span');
  name.className = 'sale-name';
  name.textContent = s.id;
  const badge = document.createElement('span');
  badge.className = 'badge';
  badge.dataset.state = s.state;
  badge.textContent = STATE_LABEL[s.state] || s.state;
  const left = document.createElement('span');
  left.className = 'muted small';
  left.textContent = s.state === 'scheduled'
    ? 'opens ' + new Date(s.opensAt).toLocaleString()
    : `${num(s.stockLeft)} of ${num(s.stock)} left`;
  a.append(name, badge, left);
  li.append(a);
  return li;
}

async function showList(forceList) {
  let r;
  try {
    r = await call('GET', '/api/v1/sales');
  } catch {
    $('loading').hidden = true;
    $('list-view').hidden = false;
    const m = $('list-message');
    m.hidden = false;
    m.textContent = 'We could not reach the shop. Check your connection and reload the page.';
    return;
  }
  const sales = (r.status === 200 && Array.isArray(r.body.sales)) ? r.body.sales : null;
  const live = (sales || []).filter((s) => s.state === 'open' || s.state === 'scheduled');
  if (!forceList && live.length === 1) {
    showSale(live[0].id); // the demo: straight to the one sale on now
    return;
  }
  $('loading').hidden = true;
  $('list-view').hidden = false;
  const list = $('sale-list');
  const order = { open: 0, scheduled: 1, sold_out: 2, closed: 3 };
  if (sales) {
    sales.sort((a, b) => (order[a.state] ?? 9) - (order[b.state] ?? 9) || a.id.localeCompare(b.id));
    list.replaceChildren(...sales.map(saleLink));
  }
  const m = $('list-message');
  if (!sales) {
    m.hidden = false;
    m.textContent = `The list of sales is not available (${r.body.error || 'HTTP ' + r.status}). Open a sale's page at /sales/<id>.`;
  } else if (sales.length === 0) {
    m.hidden = false;
    m.textContent = 'There are no sales right now. Come back later.';
  }
}

// ---------------------------------------------------------------- start

async function showSale(id) {
  S.saleId = id;
  $('buy').addEventListener('click', purchase);
  await clock.sync();
  const ok = await refreshSale();
  $('loading').hidden = true;
  $('sale-view').hidden = false;
  if (!clock.synced) say('info', 'Could not read the shop’s clock; the countdown uses this device’s clock.');
  if (ok) {
    const s = storedSession();
    const ids = s ? myOrders(id, s.shopper) : [];
    if (ids.length) {
      showOrderQuietly(ids[ids.length - 1], s.session);
      if (ids.length >= (S.sale.perUserLimit ?? 1)) S.final = 'limit_reached';
      say('ok', `You bought in this sale: order ${ids.join(', ')}.`, S.final ? 'That is the most one shopper can buy here.' : 'You may buy another.');
      render();
    } else if (!S.final && effectiveState() === 'scheduled') {
      if (preQueueOpen('scheduled')) say('ok', 'The queue is open before the sale.', 'Join now: everyone who joins before the opening is put in a random order at the opening.');
      else say('info', notOpenText(), notOpenNext());
    }
  } else if (!S.final) {
    S.loadFailed = true;
    say('error', 'We could not load this sale.', 'Check your connection; the page keeps trying.');
  }
  pollSale();
  document.addEventListener('visibilitychange', async () => {
    if (document.hidden) { pollSale(); return; }
    await clock.sync(); // the device may have slept: timers and clocks drift
    await refreshSale();
    pollSale();
  });
  setInterval(() => clock.sync().then(scheduleOpening), 5 * 60_000);
}

$('leave').addEventListener('click', () => { if (S.leaveQueue) S.leaveQueue(); });

function main() {
  const m = location.pathname.match(/^\/sales\/([^/]+)\/?$/);
  if (m) {
    showSale(decodeURIComponent(m[1]));
  } else {
    showList(new URLSearchParams(location.search).has('all'));
  }
}

main();
