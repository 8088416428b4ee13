package fake

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// shutdownWait bounds how long stopping a listening fake waits for the
// requests under way.
const shutdownWait = 5 * time.Second

// Listen serves p on addr ("127.0.0.1:0" picks a free port) and returns its
// base URL, like http://127.0.0.1:41234, and a stop function. It listens
// before it returns, so a bad address is an error at once. The server stops
// when ctx is done or stop is called, whichever comes first; stop waits up
// to 5 seconds for the requests under way, is safe to call more than once,
// and returns the same error every time.
func Listen(ctx context.Context, addr string, p *Provider) (baseURL string, stop func() error, err error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	var once sync.Once
	var stopErr error
	stop = func() error {
		once.Do(func() {
			sctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
			defer cancel()
			stopErr = srv.Shutdown(sctx)
			if stopErr != nil {
				_ = srv.Close() // the requests still under way are cut
			}
			if err := <-served; !errors.Is(err, http.ErrServerClosed) && stopErr == nil {
				stopErr = err
			}
		})
		return stopErr
	}
	context.AfterFunc(ctx, func() { _ = stop() })
	return "http://" + ln.Addr().String(), stop, nil
}
