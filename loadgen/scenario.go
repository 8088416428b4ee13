package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// urls are the endpoints a run uses.
type urls struct {
	session, tokens, purchases, queue, adminSale string
}

func makeURLs(base, sale string) urls {
	s := base + "/api/v1/sales/" + url.PathEscape(sale)
	return urls{
		session:   base + "/api/v1/session",
		tokens:    s + "/tokens",
		purchases: s + "/purchases",
		queue:     s + "/queue",
		adminSale: base + "/api/v1/admin/sales/" + url.PathEscape(sale),
	}
}

// admissionWait bounds the wait for admission in the queue scenario.
const admissionWait = 2 * time.Minute

// Outcomes of the wait for admission (kindAdmission).
const (
	outcomeAdmitted = "admitted"
	outcomeEnded    = "stream ended"
	outcomeRefused  = "refused"
)

// worker runs iterations one at a time: a virtual user (closed model) or
// a goroutine of the open model's pool. Its buffers and request templates
// are reused from one request to the next.
type worker struct {
	r      *runner
	rec    *recorder
	shared bool // rec is shared with other workers: lock it
	buf    []byte
	br     *bufio.Reader

	tokenReq, purchaseReq, joinReq *http.Request // templates, copied per request
}

func (r *runner) newWorker(rec *recorder, shared bool) *worker {
	tmpl := func(u string) *http.Request {
		req, err := http.NewRequestWithContext(r.ctx, http.MethodPost, u, nil)
		if err != nil {
			panic(err) // the URLs were checked when the run began
		}
		return req
	}
	return &worker{r: r, rec: rec, shared: shared, buf: make([]byte, 0, 1024),
		tokenReq: tmpl(r.urls.tokens), purchaseReq: tmpl(r.urls.purchases), joinReq: tmpl(r.urls.queue)}
}

// iterate runs one iteration.
func (w *worker) iterate(j job) {
	if j.measured {
		w.rec.iters.Add(1)
	}
	switch j.class {
	case classNoSession:
		w.simple(j, kindNoSession, w.tokenReq, "", "", -1)
		return
	case classBadToken:
		auth, tok := w.r.badToken(j.n)
		w.simple(j, kindBadToken, w.purchaseReq, auth, tok, -1)
		return
	case classTooFast:
		fast := w.r.pool.tooFastSession()
		w.simple(j, kindTooFast, w.tokenReq, w.r.pool.auth[fast], "", fast)
		return
	}
	switch w.r.o.Scenario {
	case ScenarioTokens:
		w.token(j, false)
	case ScenarioQueue:
		w.queue(j)
	default: // purchase, mixed
		if tok := w.token(j, true); tok != "" {
			w.purchase(j, tok)
		}
	}
}

// forgedTokens are what the bad-token client sends as purchase tokens: a
// JWT with no signature, one with a made-up signature, and garbage.
var forgedTokens = []string{
	"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJib3QiLCJzYWxlIjoiYW55IiwidGlkIjoiZm9yZ2VkIn0.",
	"eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJib3QiLCJzYWxlIjoiYW55IiwidGlkIjoiZm9yZ2VkIn0." +
		"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
	"garbage-not-a-token",
}

// request is a copy of tmpl with the shopper's session and, if key is
// set, one more header.
func request(tmpl *http.Request, auth, key, value string) *http.Request {
	req := new(http.Request)
	*req = *tmpl
	h := make(http.Header, 2)
	if auth != "" {
		h["Authorization"] = []string{auth}
	}
	if key != "" {
		h[key] = []string{value}
	}
	req.Header = h
	return req
}

// send makes req and reads its answer into w.buf (valid until the next
// send). Status 0 means no answer.
func (w *worker) send(req *http.Request) (int, []byte, error) {
	resp, err := w.r.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	w.buf, err = readBody(resp.Body, w.buf[:0])
	resp.Body.Close()
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, w.buf, nil
}

// maxBody is as much of an answer as the generator keeps; the rest is
// read and dropped.
const maxBody = 64 << 10

// readBody reads r to its end into buf, growing it up to maxBody.
func readBody(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= maxBody {
				_, err := io.Copy(io.Discard, r)
				return buf, err
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// timed sends req as a request of kind k in iteration j and records it;
// first says whether it is the iteration's first request (timed from the
// intended start in the open model).
func (w *worker) timed(j job, k kind, req *http.Request, first bool) (int, []byte) {
	s := sample{kind: k, sent: w.r.o.now()}
	if first {
		s.intended = j.intended
	}
	status, body, err := w.send(req)
	s.done, s.status, s.err = w.r.o.now(), status, err
	if err != nil && w.r.ctx.Err() != nil {
		return 0, nil // interrupted: not the server's doing
	}
	w.add(s, j.measured)
	return status, body
}

// add records s, locking a shared recorder.
func (w *worker) add(s sample, measured bool) {
	if w.shared {
		w.rec.mu.Lock()
		defer w.rec.mu.Unlock()
	}
	w.rec.add(w.r, s, measured)
}

// saw notes that shopper got token id; orders counts acknowledged orders.
func (w *worker) saw(shopper int, id string, orders int64) {
	if w.shared {
		w.rec.mu.Lock()
		defer w.rec.mu.Unlock()
	}
	if id != "" {
		w.rec.seen = append(w.rec.seen, seenToken{shopper: int32(shopper), id: id})
	}
	w.rec.orders += orders
}

// token asks for a token for the iteration's shopper and, if want, returns
// it ("" if none was issued).
func (w *worker) token(j job, want bool) string {
	status, body := w.timed(j, kindToken, request(w.tokenReq, w.r.pool.auth[j.shopper], "", ""), true)
	if status != http.StatusCreated && status != http.StatusOK {
		return ""
	}
	w.saw(j.shopper, jsonString(body, "tokenId"), 0)
	if !want {
		return ""
	}
	return jsonString(body, "token")
}

// purchase buys with tok.
func (w *worker) purchase(j job, tok string) {
	status, body := w.timed(j, kindPurchase, request(w.purchaseReq, w.r.pool.auth[j.shopper], "X-Purchase-Token", tok), false)
	if status == http.StatusAccepted && jsonString(body, "orderId") != "" {
		w.saw(j.shopper, "", 1)
	}
}

// simple is an abusive client's request; shopper >= 0 records the token it
// may get.
func (w *worker) simple(j job, k kind, tmpl *http.Request, auth, tok string, shopper int) {
	key := ""
	if tok != "" {
		key = "X-Purchase-Token"
	}
	status, body := w.timed(j, k, request(tmpl, auth, key, tok), true)
	if shopper >= 0 && (status == http.StatusCreated || status == http.StatusOK) {
		w.saw(shopper, jsonString(body, "tokenId"), 0)
	}
}

// queue joins the waiting room, waits for admission on the ticket's event
// stream, and buys with the token the admitted event carries.
func (w *worker) queue(j job) {
	status, body := w.timed(j, kindJoin, request(w.joinReq, w.r.pool.auth[j.shopper], "", ""), true)
	if status != http.StatusCreated && status != http.StatusOK && status != http.StatusAccepted {
		return
	}
	ticket := jsonString(body, "ticket")
	if ticket == "" {
		return // pending without a ticket yet: not followed
	}
	tok, id := w.admission(j, ticket, w.r.o.now())
	if tok == "" {
		return
	}
	w.saw(j.shopper, id, 0)
	w.purchase(j, tok)
}

// admission reads the ticket's event stream until the admitted event (its
// token and token id) or the end of the ticket, and records the wait from
// joined. The stream's connection is closed after it, not reused.
func (w *worker) admission(j job, ticket string, joined time.Time) (tok, id string) {
	ctx, cancel := context.WithTimeout(w.r.ctx, admissionWait)
	defer cancel()
	s := sample{kind: kindAdmission, sent: joined}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.r.urls.queue+"/"+url.PathEscape(ticket)+"/events", nil)
	if err != nil {
		return "", ""
	}
	req.Header.Set("Authorization", w.r.pool.auth[j.shopper])
	req.Header.Set("Accept", "text/event-stream")
	resp, err := w.r.hc.Do(req)
	if err != nil {
		if w.r.ctx.Err() == nil {
			s.done, s.err = w.r.o.now(), err
			w.add(s, j.measured)
		}
		return "", ""
	}
	defer resp.Body.Close()
	s.status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		s.done, s.outcome = w.r.o.now(), outcomeRefused
		w.add(s, j.measured)
		return "", ""
	}
	if w.br == nil {
		w.br = bufio.NewReaderSize(resp.Body, 4096)
	} else {
		w.br.Reset(resp.Body)
	}
	defer w.br.Reset(nil)
	var event []byte
	for {
		line, err := w.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			for err == bufio.ErrBufferFull { // a line longer than the buffer: not one of ours
				_, err = w.br.ReadSlice('\n')
			}
			continue
		}
		if err != nil {
			if w.r.ctx.Err() != nil {
				return "", ""
			}
			s.done, s.outcome = w.r.o.now(), outcomeEnded
			w.add(s, j.measured)
			return "", ""
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			event = event[:0]
		case bytes.HasPrefix(line, []byte("event:")):
			event = append(event[:0], bytes.TrimSpace(line[len("event:"):])...)
		case bytes.HasPrefix(line, []byte("data:")):
			data := bytes.TrimSpace(line[len("data:"):])
			switch string(event) {
			case "admitted":
				tok, id = jsonString(data, "token"), jsonString(data, "tokenId")
				s.done, s.outcome = w.r.o.now(), outcomeAdmitted
				w.add(s, j.measured)
				return tok, id
			case "done":
				s.done, s.outcome = w.r.o.now(), "done:"+jsonString(data, "status")
				w.add(s, j.measured)
				return "", ""
			}
		}
	}
}

// jsonString is the string value of key in the JSON object b, or "": a
// targeted look-up for the few fields the generator reads, without
// decoding the whole answer. It finds the key at any depth, which is
// enough for flashgate's flat answers.
func jsonString(b []byte, key string) string {
	for i := 0; ; {
		k := bytes.Index(b[i:], []byte(`"`+key+`"`))
		if k < 0 {
			return ""
		}
		p := i + k + len(key) + 2
		i = p
		for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
			p++
		}
		if p >= len(b) || b[p] != ':' {
			continue // a value that reads like the key
		}
		p++
		for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
			p++
		}
		if p >= len(b) || b[p] != '"' {
			return "" // not a string
		}
		start, escaped := p, false
		for p++; p < len(b); p++ {
			switch b[p] {
			case '\\':
				escaped = true
				p++
				continue
			case '"':
				if !escaped {
					return string(b[start+1 : p])
				}
				var s string
				if json.Unmarshal(b[start:p+1], &s) != nil {
					return ""
				}
				return s
			}
		}
		return ""
	}
}

// retryAfter is an answer's Retry-After: 1 s when it has none, 10 s at most.
func retryAfter(h http.Header) time.Duration {
	n, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || n < 1 {
		n = 1
	}
	return time.Duration(min(n, 10)) * time.Second
}
