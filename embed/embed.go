// Package embed runs the NATS server with JetStream inside the flashgate
// process, so that a developer needs nothing else installed. The zero Options
// work: a server that does not listen on the network, with its JetStream
// files in a temporary directory removed at Shutdown.
//
// The package name shadows the standard library's embed package; alias one
// of them where a file needs both.
package embed

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options configures the embedded server.
type Options struct {
	// Dir is the JetStream store directory. Empty: a temporary directory that
	// Shutdown removes.
	Dir string
	// SyncAlways makes JetStream fsync every write, so an acknowledged write
	// survives a power cut and not only a process crash. It costs about 17x
	// in write throughput (see the README).
	SyncAlways bool
	// Listen exposes the server on TCP at host:port ("127.0.0.1:0" picks a
	// port). Empty: in-process connections only.
	Listen string
	// User and Password protect a listening server. Both empty: no auth.
	User, Password string
	// Name is the server name. Empty: "flashgate".
	Name string
	// MaxPayload is the largest message in bytes. Zero: 8 MiB.
	MaxPayload int32
	// ReadyTimeout bounds the wait for the server to accept connections.
	// Zero: 10 s.
	ReadyTimeout time.Duration
}

// Server is a running embedded NATS server.
type Server struct {
	ns   *server.Server
	tmp  string
	once sync.Once
}

// Start starts a server and waits until it accepts connections.
func Start(o Options) (*Server, error) {
	host, port := "", 0
	if o.Listen != "" {
		var err error
		if host, port, err = listenAddr(o.Listen); err != nil {
			return nil, err
		}
	}
	s := &Server{}
	dir := o.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "flashgate-nats-")
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		s.tmp, dir = tmp, tmp
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats: store dir: %w", err)
	}
	name := o.Name
	if name == "" {
		name = "flashgate"
	}
	maxPayload := o.MaxPayload
	if maxPayload == 0 {
		maxPayload = 8 << 20
	}
	opts := &server.Options{
		ServerName: name,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: maxPayload,
		// JetStream's own limits: leave the machine's memory to flashgate.
		JetStreamMaxMemory: 256 << 20,
	}
	if o.SyncAlways {
		opts.SyncAlways = true
	}
	if o.Listen == "" {
		opts.DontListen = true
	} else {
		opts.Host, opts.Port = host, port
		opts.Username, opts.Password = o.User, o.Password
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	s.ns = ns
	ns.Start()
	wait := o.ReadyTimeout
	if wait == 0 {
		wait = 10 * time.Second
	}
	if !ns.ReadyForConnections(wait) {
		listening := opts.DontListen || ns.Addr() != nil // read before the shutdown, which closes it
		s.Shutdown()
		if !listening {
			return nil, fmt.Errorf("embedded nats: not listening on %s after %v (is the address in use?)", o.Listen, wait)
		}
		return nil, errors.New("embedded nats: not ready for connections in time (is the store directory used by another process?)")
	}
	return s, nil
}

// listenAddr is the host and port nats-server is to listen on for addr
// (server.RANDOM_PORT for port 0). A fixed port is listened on once first,
// on the host nats-server would use: one in use is refused here at once,
// where nats-server would only fail to be ready, after the whole wait.
func listenAddr(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("embedded nats: listen address %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("embedded nats: listen port %q: %w", port, err)
	}
	if p == 0 {
		return host, server.RANDOM_PORT, nil
	}
	natsHost := host
	if natsHost == "" {
		natsHost = "0.0.0.0" // nats-server's default
	}
	l, err := net.Listen("tcp", net.JoinHostPort(natsHost, port))
	if err != nil {
		return "", 0, fmt.Errorf("embedded nats: cannot listen on %s: %w", addr, err)
	}
	return host, p, l.Close()
}

// Connect opens an in-process connection (no TCP) to the server.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(s.ns), nats.Name("flashgate")}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded nats: %w", err)
	}
	return nc, nil
}

// ClientURL is the TCP URL of a listening server, or "" when it only takes
// in-process connections.
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// StoreDir is where JetStream keeps its files.
func (s *Server) StoreDir() string { return s.ns.StoreDir() }

// NATS returns the underlying server, for tests and tools.
func (s *Server) NATS() *server.Server { return s.ns }

// shutdownWait bounds Shutdown's wait for the server's goroutines.
var shutdownWait = 30 * time.Second

// ErrShutdownStuck is Shutdown's answer when the server's goroutines did not
// all end within the bound.
var ErrShutdownStuck = errors.New("embedded nats: the server did not stop in time")

// Shutdown stops the server and waits until it is down, at most 30 s. It is
// safe to call more than once.
//
// The bound is there because the server waits for all of its goroutines, and
// one of them can wait for ever: a stream restore whose client went away at
// the moment the server began to stop (nats-server v2.15.2 starts the
// restore's reader, then fails to start its watchdog once shutdown has
// begun). JetStream's files are flushed and closed before that wait, so
// giving up on it loses nothing; the stuck goroutine ends with the process.
func (s *Server) Shutdown() { _ = s.Stop() }

// Stop is Shutdown, telling whether the server stopped within the bound
// (nil) or ErrShutdownStuck.
func (s *Server) Stop() error {
	var err error
	s.once.Do(func() {
		if s.ns != nil {
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.ns.Shutdown()
				s.ns.WaitForShutdown()
			}()
			t := time.NewTimer(shutdownWait)
			defer t.Stop()
			select {
			case <-done:
			case <-t.C:
				err = ErrShutdownStuck
				return // the files may still be in use: keep them
			}
		}
		s.cleanup()
	})
	return err
}

func (s *Server) cleanup() {
	if s.tmp != "" {
		_ = os.RemoveAll(s.tmp)
	}
}
