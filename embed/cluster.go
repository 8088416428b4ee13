package embed

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a NATS cluster of servers in this process, listening on
// loopback: for tests of replicated streams and for trying a cluster out on
// one machine. Production clusters are run with nats-server itself.
type Cluster struct {
	Servers []*Server
}

// StartCluster starts n servers with JetStream, their stores under dir, and
// waits until the cluster has a JetStream meta leader that counts all n
// online, so that a stream with n replicas can be placed.
//
// Every server is given the route ports of all of them before it starts (a
// JetStream cluster needs configured routes), so the ports are chosen by
// the OS first and then listened on by the servers. In between, another
// process may take one of them: the outgoing connections of other tests
// draw their ports from the same range. A server without its route
// listener is therefore given another chance: StartCluster stops them all,
// clears the stores they made and starts again on fresh ports, three starts
// in all. It does so only when the stores were not there before it began,
// so that it never deletes a cluster's earlier data.
func StartCluster(n int, dir string) (*Cluster, error) {
	if n < 1 {
		return nil, errors.New("cluster: need at least one server")
	}
	fresh := true
	for i := range n {
		if _, err := os.Stat(storeDir(dir, i)); !errors.Is(err, fs.ErrNotExist) {
			fresh = false
		}
	}
	var err error
	for attempt := 1; ; attempt++ {
		var c *Cluster
		c, err = startCluster(n, dir)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, errNoRoute) || !fresh || attempt == clusterAttempts {
			return nil, err
		}
		for i := range n {
			if rerr := os.RemoveAll(storeDir(dir, i)); rerr != nil {
				return nil, fmt.Errorf("cluster: clear a store before starting again: %w (after %w)", rerr, err)
			}
		}
	}
}

// clusterAttempts bounds StartCluster's starts.
const clusterAttempts = 3

// errNoRoute marks a server that did not get its route listener, every
// server having stopped: another start on fresh ports may succeed.
var errNoRoute = errors.New("no route listener")

func storeDir(dir string, i int) string { return filepath.Join(dir, fmt.Sprintf("n%d", i+1)) }

// freePorts asks the OS for n free loopback ports; a variable so that a
// test can hand StartCluster a port already taken.
var freePorts = func(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("cluster: free port: %w", err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	return ports, nil
}

// readyWait bounds the wait for a server's listeners; a variable so that a
// test of a taken port need not wait the full bound.
var readyWait = 10 * time.Second

func startCluster(n int, dir string) (*Cluster, error) {
	ports, err := freePorts(n)
	if err != nil {
		return nil, err
	}
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	c := &Cluster{}
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			JetStream:  true,
			StoreDir:   storeDir(dir, i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			NoLog:      true,
			NoSigs:     true,
			MaxPayload: 8 << 20,
			Cluster:    server.ClusterOpts{Name: "flashgate", Host: "127.0.0.1", Port: ports[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}
		ns, err := server.NewServer(opts)
		if err != nil {
			c.Shutdown()
			return nil, fmt.Errorf("cluster: %w", err)
		}
		ns.Start()
		c.Servers = append(c.Servers, &Server{ns: ns})
	}
	for _, s := range c.Servers {
		if s.ns.ReadyForConnections(readyWait) {
			continue
		}
		noRoute := s.ns.ClusterAddr() == nil // read before the stop, which closes it
		stuck := c.stop()
		if noRoute && stuck == nil {
			return nil, fmt.Errorf("cluster: server %s: %w after %v (its port taken?)", s.ns.Name(), errNoRoute, readyWait)
		}
		return nil, errors.Join(fmt.Errorf("cluster: server %s is not ready for connections after %v", s.ns.Name(), readyWait), stuck)
	}
	// A meta leader alone is not enough: until it has every peer's
	// statistics it counts the others offline, and a replicated stream
	// created meanwhile is refused ("no suitable peers for placement, peer
	// offline").
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, s := range c.Servers {
			if s.ns.JetStreamIsLeader() && len(s.ns.JetStreamClusterPeers()) == n {
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			c.Shutdown()
			return nil, fmt.Errorf("cluster: no JetStream meta leader that sees all %d servers within 30s", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URLs is the comma-separated client URLs of the servers, for nats.Connect.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.ns.ClientURL()
	}
	return strings.Join(urls, ",")
}

// Shutdown stops every server.
func (c *Cluster) Shutdown() { _ = c.stop() }

// stop stops every server; ErrShutdownStuck if one did not stop in time.
func (c *Cluster) stop() error {
	var errs []error
	for _, s := range c.Servers {
		errs = append(errs, s.Stop())
	}
	return errors.Join(errs...)
}
