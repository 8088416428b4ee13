// sse.js — a text/event-stream reader over fetch(), for streams that need
// an Authorization header (EventSource cannot send one).

/**
 * SSEParser turns text/event-stream text, pushed in chunks of any size, into
 * events, following the WHATWG rules: lines end in \r\n, \n or \r; a blank
 * line dispatches; "data" lines join with \n; lines starting with ":" are
 * comments; "retry" sets the reconnection delay.
 */
export class SSEParser {
  /** @param {(ev: {event: string, data: string, id: string}) => void} onEvent */
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buf = '';
    this.event = '';
    this.data = [];
    this.id = '';
    this.retry = null; // ms, when the server set it
  }

  /** push feeds decoded text. */
  push(text) {
    this.buf += text;
    let start = 0;
    for (;;) {
      const lf = this.buf.indexOf('\n', start);
      const cr = this.buf.indexOf('\r', start);
      let end, next;
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        if (cr === this.buf.length - 1) break; // maybe the \r of a \r\n split across chunks
        end = cr;
        next = this.buf[cr + 1] === '\n' ? cr + 2 : cr + 1;
      } else if (lf >= 0) {
        end = lf;
        next = lf + 1;
      } else {
        break;
      }
      this.line(this.buf.slice(start, end));
      start = next;
    }
    this.buf = this.buf.slice(start);
  }

  line(l) {
    if (l === '') { this.dispatch(); return; }
    if (l[0] === ':') return;
    const c = l.indexOf(':');
    const field = c < 0 ? l : l.slice(0, c);
    let value = c < 0 ? '' : l.slice(c + 1);
    if (value[0] === ' ') value = value.slice(1);
    switch (field) {
      case 'event': this.event = value; break;
      case 'data': this.data.push(value); break;
      case 'id': if (!value.includes('\0')) this.id = value; break;
      case 'retry': if (/^\d+$/.test(value)) this.retry = Number(value); break;
    }
  }

  dispatch() {
    const ev = { event: this.event || 'message', data: this.data.join('\n'), id: this.id };
    const had = this.data.length > 0;
    this.event = '';
    this.data = [];
    if (had) this.onEvent(ev);
  }
}

/**
 * readEvents fetches url and calls onEvent for each event until the stream
 * ends (resolves) or fails (rejects). onOpen gets the response first; a
 * non-2xx answer rejects with an Error carrying .status. onData is called for
 * every chunk (a sign of life, for a watchdog).
 */
export async function readEvents(url, { headers, signal, onOpen, onEvent, onData }) {
  const resp = await fetch(url, {
    headers: { Accept: 'text/event-stream', ...headers },
    signal,
    cache: 'no-store',
    credentials: 'omit',
  });
  if (!resp.ok || !resp.body) {
    const err = new Error('HTTP ' + resp.status);
    err.status = resp.status;
    err.retryAfter = Number(resp.headers.get('Retry-After')) || 0;
    throw err;
  }
  if (onOpen) onOpen(resp);
  const parser = new SSEParser(onEvent);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return parser.retry;
      if (onData) onData();
      parser.push(value);
    }
  } finally {
    reader.releaseLock();
  }
}
