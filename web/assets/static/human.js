// human.js — the human check a sale may ask for before a token request:
// a proof-of-work puzzle solved in a web worker (pow-worker.js), or the
// CAPTCHA widget of the provider the server is configured with.

/**
 * solvePow solves a puzzle {challenge, difficulty} in a worker and resolves
 * to the solution for X-Challenge-Solution. onProgress(tries) is called now
 * and then. Rejects after timeoutMs or when the worker fails.
 */
export function solvePow(puzzle, onProgress, timeoutMs = 120_000) {
  return new Promise((resolve, reject) => {
    const w = new Worker('/static/pow-worker.js');
    const started = performance.now();
    const timer = setTimeout(() => { w.terminate(); reject(new Error('the puzzle took too long')); }, timeoutMs);
    w.onmessage = (e) => {
      const m = e.data || {};
      if (m.progress) { if (onProgress) onProgress(m.progress); return; }
      clearTimeout(timer);
      w.terminate();
      if (m.solution) {
        globalThis.flashgatePowLast = { tries: m.tries, ms: performance.now() - started, difficulty: puzzle.difficulty }; // for tests and the curious
        resolve(m.solution);
      } else {
        reject(new Error(m.error || 'the puzzle could not be solved'));
      }
    };
    w.onerror = (e) => { clearTimeout(timer); w.terminate(); reject(new Error(e.message || 'puzzle worker failed')); };
    w.postMessage({ challenge: puzzle.challenge, difficulty: puzzle.difficulty });
  });
}

// The providers' browser scripts and how to render their widget. All three
// take a site key and call back with the response token.
const captchaScripts = {
  turnstile: { src: 'https://challenges.cloudflare.com/turnstile/v0/api.js?render=explicit', api: () => window.turnstile },
  hcaptcha: { src: 'https://js.hcaptcha.com/1/api.js?render=explicit', api: () => window.hcaptcha },
  recaptcha: { src: 'https://www.google.com/recaptcha/api.js?render=explicit', api: () => window.grecaptcha },
};

function loadScript(src) {
  return new Promise((resolve, reject) => {
    if (document.querySelector(`script[src="${src}"]`)) { resolve(); return; }
    const s = document.createElement('script');
    s.src = src;
    s.async = true;
    s.onload = () => resolve();
    s.onerror = () => reject(new Error('the CAPTCHA could not be loaded'));
    document.head.appendChild(s);
  });
}

/**
 * captchaToken shows the provider's widget in the element `box` and
 * resolves to the response token once the shopper passed it.
 */
export async function captchaToken(box, { provider, siteKey }) {
  const p = captchaScripts[provider];
  if (!p) throw new Error('unknown CAPTCHA provider ' + provider);
  await loadScript(p.src);
  for (let i = 0; i < 100 && !p.api()?.render; i++) await new Promise((r) => setTimeout(r, 50));
  const api = p.api();
  if (!api?.render) throw new Error('the CAPTCHA could not be loaded');
  box.hidden = false;
  box.replaceChildren();
  const slot = document.createElement('div');
  box.appendChild(slot);
  try {
    return await new Promise((resolve, reject) => {
      api.render(slot, {
        sitekey: siteKey,
        callback: resolve,
        'error-callback': () => reject(new Error('the CAPTCHA failed')),
        'expired-callback': () => reject(new Error('the CAPTCHA expired')),
      });
    });
  } finally {
    box.hidden = true;
  }
}
