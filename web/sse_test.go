package web_test

import (
	"net/http/httptest"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/flashgate/flashgate/web"
)

// TestSSEParser runs the page's text/event-stream parser in the browser
// over chunks split at awkward places.
func TestSSEParser(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the page's own logic has no Go concurrency for the race detector to check")
	}
	browser := startBrowser(t)
	srv := httptest.NewServer(web.Handler())
	t.Cleanup(srv.Close)
	p := newTab(t, browser, 800, 600)
	p.do("open a page", chromedp.Navigate(srv.URL+"/admin"))
	got, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](`(async () => {
		const { SSEParser } = await import('/static/sse.js');
		const out = [];
		const p = new SSEParser((ev) => out.push(ev.event + '=' + ev.data + (ev.id ? '#' + ev.id : '')));
		const chunks = [
			': a comment\r', '\n',                       // CRLF split across chunks
			'event: figures\r\ndata: {"a":', '1}\r\n\r\n',
			'data: line one\ndata:line two\n\n',         // two data lines, no space after the colon
			'event: lonely\n\n',                         // no data: not dispatched
			'id: 7\nretry: 2500\ndata\n\n',              // a field with no colon; id sticks
			'data: cr only\r\r',                         // lines ended by a lone CR
			'data: half',                                // incomplete: not yet
		];
		for (const c of chunks) p.push(c);
		out.push('retry=' + p.retry);
		return out.join(' | ');
	})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	want := `figures={"a":1} | message=line one
line two | message=#7 | message=cr only#7 | retry=2500`
	if got != want {
		t.Errorf("parsed:\n%s\nwant:\n%s", got, want)
	}
}
