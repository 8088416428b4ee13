// Package redisproc starts and stops a private redis-server for the
// benchmarks and their tests: a unix socket in a directory of its own, no
// RDB snapshots, and an append-only file written before each reply and
// fsynced every second (--appendonly yes --appendfsync everysec).
package redisproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Server is a running redis-server.
type Server struct {
	// Addr is the server's address for the reference server's -redis flag
	// and for Dial: "unix:" followed by the socket's path.
	Addr string
	// Socket is the unix socket's path.
	Socket string
	cmd    *exec.Cmd
	done   chan error
	log    string
}

// PID is the redis-server's process id (0 if it is not running).
func (s *Server) PID() int {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Options configure Start. The zero value works when redis-server is on
// PATH, but Dir is required.
type Options struct {
	Bin string // redis-server binary; "" looks it up on PATH
	Dir string // working directory: the socket, the append-only file, the log
}

// LookPath returns the path of redis-server on PATH, or an error saying it
// is missing.
func LookPath() (string, error) {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("redis-server is not on PATH (Debian: apt-get install redis-server): %w", err)
	}
	return p, nil
}

// Start runs redis-server in o.Dir and waits until it answers PING.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Dir == "" {
		return nil, errors.New("start redis-server: no directory")
	}
	bin := o.Bin
	if bin == "" {
		p, err := LookPath()
		if err != nil {
			return nil, err
		}
		bin = p
	}
	dir, err := filepath.Abs(o.Dir)
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	s := &Server{Socket: filepath.Join(dir, "redis.sock"), log: filepath.Join(dir, "redis.log"), done: make(chan error, 1)}
	s.Addr = "unix:" + s.Socket
	s.cmd = exec.Command(bin,
		"--port", "0", // no TCP listener: the unix socket only
		"--unixsocket", s.Socket, "--unixsocketperm", "700",
		"--dir", dir, "--logfile", s.log,
		"--save", "", // no RDB snapshots
		"--appendonly", "yes", "--appendfsync", "everysec",
		"--daemonize", "no", "--protected-mode", "no",
	)
	s.cmd.Dir = dir
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(s.Socket); err == nil {
			return s, nil
		}
		select {
		case err := <-s.done:
			s.done <- err
			return nil, fmt.Errorf("redis-server exited at start: %v%s", err, s.logTail())
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("redis-server did not answer PING within 10s%s", s.logTail())
		}
	}
}

// ping sends one PING over the socket and expects +PONG.
func ping(socket string) error {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func (s *Server) logTail() string {
	b, err := os.ReadFile(s.log)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "; its log ends:\n" + string(b)
}

// Stop asks redis-server to finish (SIGTERM: it flushes the append-only
// file) and waits up to 10 seconds before killing it. It is safe to call
// more than once.
func (s *Server) Stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		err := <-s.done
		s.done <- err
	}
}
