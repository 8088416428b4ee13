package embed

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// takeRoutePort makes StartCluster's route port i one that is already
// listened on, in its first start only or in every start, and bounds the
// wait for listeners by wait in the starts given a taken port. It returns
// the taken port and the count of port choices made.
func takeRoutePort(t *testing.T, i int, always bool, wait time.Duration) (int, *int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	taken := l.Addr().(*net.TCPAddr).Port
	real, realWait := freePorts, readyWait
	calls := new(int)
	freePorts = func(n int) ([]int, error) {
		*calls++
		ports, err := real(n)
		if err == nil && (always || *calls == 1) {
			ports[i] = taken
			readyWait = wait
		} else {
			readyWait = realWait // a start on free ports gets the full bound
		}
		return ports, err
	}
	t.Cleanup(func() {
		freePorts, readyWait = real, realWait
		l.Close()
	})
	return taken, calls
}

// TestStartClusterTakenRoutePort: a route port taken by another process
// between the OS choosing it and the server listening on it (seen in CI)
// makes StartCluster start again on fresh ports, not fail.
func TestStartClusterTakenRoutePort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	taken, calls := takeRoutePort(t, 1, false, 2*time.Second)
	c, err := StartCluster(3, t.TempDir())
	if err != nil {
		t.Fatalf("start with a taken route port: %v", err)
	}
	defer c.Shutdown()
	if *calls != 2 {
		t.Errorf("ports chosen %d times, want 2 (once more after the taken port)", *calls)
	}
	if len(c.Servers) != 3 {
		t.Fatalf("%d servers, want 3", len(c.Servers))
	}
	for _, s := range c.Servers {
		if got := s.NATS().ClusterAddr(); got == nil || got.Port == taken {
			t.Errorf("server %s route listener %v", s.NATS().Name(), got)
		}
	}
	if got := strings.Count(c.URLs(), ","); got != 2 {
		t.Errorf("URLs %q, want three", c.URLs())
	}
}

// TestStartClusterGivesUp: when every start finds a port taken,
// StartCluster fails after its attempts and says which listener is missing.
func TestStartClusterGivesUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	_, calls := takeRoutePort(t, 0, true, 500*time.Millisecond)
	_, err := StartCluster(2, t.TempDir())
	if err == nil {
		t.Fatal("started with a route port taken every time")
	}
	if *calls != clusterAttempts {
		t.Errorf("ports chosen %d times, want %d", *calls, clusterAttempts)
	}
	if !strings.Contains(err.Error(), "server n1: no route listener") {
		t.Errorf("error %q does not name the missing listener", err)
	}
}

// TestStartClusterKeepsEarlierStores: a cluster started again on stores
// that were there before is not retried on fresh ports, which would
// delete them: the taken port is reported at once.
func TestStartClusterKeepsEarlierStores(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	dir := t.TempDir()
	mark := filepath.Join(dir, "n1", "kept")
	if err := os.MkdirAll(filepath.Dir(mark), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mark, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, calls := takeRoutePort(t, 1, true, 500*time.Millisecond)
	if _, err := StartCluster(2, dir); err == nil || !strings.Contains(err.Error(), "no route listener") {
		t.Fatalf("start with a route port taken: %v", err)
	}
	if *calls != 1 {
		t.Errorf("ports chosen %d times, want 1: no retry over earlier stores", *calls)
	}
	if _, err := os.Stat(mark); err != nil {
		t.Errorf("earlier store: %v", err)
	}
}
