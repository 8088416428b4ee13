package embed

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStopRemovesTemporaryStore(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := s.StoreDir()
	if err := s.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat(s.tmp); !os.IsNotExist(err) {
		t.Errorf("temporary store %s still there (%v)", dir, err)
	}
	if err := s.Stop(); err != nil { // a second stop does nothing
		t.Errorf("second stop: %v", err)
	}
}

// TestStopIsBounded holds one of the server's goroutines for ever, as a
// stream restore abandoned at shutdown does, and checks that Stop gives up
// after its bound instead of hanging the process.
func TestStopIsBounded(t *testing.T) {
	defer func(d time.Duration) { shutdownWait = d }(shutdownWait)
	shutdownWait = 200 * time.Millisecond
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	release := holdServerGoroutine(t, s)
	defer release()
	start := time.Now()
	if err := s.Stop(); err != ErrShutdownStuck {
		t.Fatalf("stop: %v, want ErrShutdownStuck", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("stop took %v", took)
	}
	if _, err := os.Stat(s.tmp); err != nil {
		t.Errorf("the store of a server that may still run was removed: %v", err)
	}
}

// holdServerGoroutine starts a stream restore and sends it no data: the
// server's reader of the restore waits until its watchdog gives up (5 s),
// or for ever if the watchdog never started. The returned function waits
// (at most 10 s) for the server to be down and removes its files.
func holdServerGoroutine(t *testing.T, s *Server) func() {
	t.Helper()
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := `{"config":{"name":"HELD","subjects":["held"],"storage":"file","retention":"limits","num_replicas":1},"state":{"messages":0}}`
	m, err := nc.Request("$JS.API.STREAM.RESTORE.HELD", []byte(req), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m.Data), "deliver_subject") {
		t.Fatalf("restore not started: %s", m.Data)
	}
	return func() {
		// Bounded: when shutdown began before the restore's watchdog
		// started (the very hang Stop guards against), the reader waits for
		// ever, and so would WaitForShutdown.
		done := make(chan struct{})
		go func() { s.ns.WaitForShutdown(); close(done) }()
		select {
		case <-done:
			os.RemoveAll(s.tmp)
		case <-time.After(10 * time.Second):
			t.Logf("the held restore never ended (no watchdog): its server is left to the end of the test process")
		}
	}
}

// TestStartListenTaken: a client address in use is refused at once, and
// the error says so (it used to be a 10 s wait and a word on the store).
func TestStartListenTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	s, err := Start(Options{Dir: t.TempDir(), Listen: l.Addr().String()})
	if err == nil {
		s.Shutdown()
		t.Fatalf("started on %s, which is in use", l.Addr())
	}
	if !strings.Contains(err.Error(), "cannot listen on "+l.Addr().String()) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %q does not say the address is in use", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("refused after %v, want at once", took)
	}
}
