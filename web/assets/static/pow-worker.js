// pow-worker.js — solves a flashgate proof-of-work puzzle off the page's
// main thread: find a decimal counter n such that
// SHA-256(challenge + ":" + n) starts with `difficulty` zero bits.
//
// A plain SHA-256 over 32-bit integers: the fixed start of the message (the
// challenge's whole 64-byte blocks) is hashed once, and each try hashes only
// the tail. crypto.subtle is not used: it is asynchronous per hash, much
// slower for millions of tiny inputs, and missing on plain-http origins.
//
// Message in: {challenge, difficulty}. Messages out: {progress: tries} now
// and then, and finally {solution: "<challenge>:<n>", tries} or {error}.

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
const W = new Uint32Array(64);

/** compress folds one 64-byte block (bytes[off..off+64]) into state h. */
function compress(h, bytes, off) {
  for (let i = 0; i < 16; i++) {
    const j = off + 4 * i;
    W[i] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
  }
  for (let i = 16; i < 64; i++) {
    const a = W[i - 15], b = W[i - 2];
    const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
    const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
    W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
  }
  let a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const ch = (e & f) ^ (~e & g);
    const t1 = (hh + S1 + ch + K[i] + W[i]) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const maj = (a & b) ^ (a & c) ^ (b & c);
    const t2 = (S0 + maj) | 0;
    hh = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
  }
  h[0] = (h[0] + a) | 0; h[1] = (h[1] + b) | 0; h[2] = (h[2] + c) | 0; h[3] = (h[3] + d) | 0;
  h[4] = (h[4] + e) | 0; h[5] = (h[5] + f) | 0; h[6] = (h[6] + g) | 0; h[7] = (h[7] + hh) | 0;
}

/** zeroBits counts the leading zero bits of a digest's state words. */
function zeroBits(h) {
  let n = 0;
  for (let i = 0; i < 8; i++) {
    if (h[i] === 0) { n += 32; continue; }
    return n + Math.clz32(h[i]);
  }
  return n;
}

function solve(challenge, difficulty) {
  const enc = new TextEncoder();
  const prefix = enc.encode(challenge + ':');
  const full = prefix.length - (prefix.length % 64);
  const mid = Int32Array.from(IV);
  for (let off = 0; off < full; off += 64) compress(mid, prefix, off);
  const rest = prefix.subarray(full);
  const tail = new Uint8Array(128); // the rest of the prefix, the counter, padding, length
  tail.set(rest);
  const h = new Int32Array(8);
  for (let n = 0; n < Number.MAX_SAFE_INTEGER; n++) {
    const digits = String(n);
    let len = rest.length;
    for (let i = 0; i < digits.length; i++) tail[len++] = digits.charCodeAt(i);
    const msgLen = prefix.length + digits.length;
    tail[len++] = 0x80;
    const blocks = len + 8 <= 64 ? 1 : 2;
    const end = blocks * 64;
    tail.fill(0, len, end);
    const bits = msgLen * 8; // below 2^32 for any challenge
    tail[end - 4] = bits >>> 24; tail[end - 3] = bits >>> 16; tail[end - 2] = bits >>> 8; tail[end - 1] = bits;
    h.set(mid);
    compress(h, tail, 0);
    if (blocks === 2) compress(h, tail, 64);
    if (zeroBits(h) >= difficulty) return { solution: challenge + ':' + digits, tries: n + 1 };
    if ((n & 0xffff) === 0xffff) postMessage({ progress: n + 1 });
  }
  return { error: 'no solution found' };
}

onmessage = (e) => {
  const { challenge, difficulty } = e.data || {};
  if (typeof challenge !== 'string' || !Number.isInteger(difficulty) || difficulty < 1 || difficulty > 32) {
    postMessage({ error: 'bad puzzle' });
    return;
  }
  postMessage(solve(challenge, difficulty));
};
