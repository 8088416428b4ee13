package embed

import (
	"errors"
	"fmt"
	"net"
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
func StartCluster(n int, dir string) (*Cluster, error) {
	if n < 1 {
		return nil, errors.New("cluster: need at least one server")
	}
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("cluster: free port: %w", err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
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
			StoreDir:   filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
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
		if !s.ns.ReadyForConnections(10 * time.Second) {
			c.Shutdown()
			return nil, errors.New("cluster: a server is not ready for connections")
		}
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
func (c *Cluster) Shutdown() {
	for _, s := range c.Servers {
		s.Shutdown()
	}
}
