package app_test

// The cluster tests: several flashgate processes on a three-node NATS
// cluster started in the test process (embed.StartCluster), with replicated
// (R3) streams and buckets. They stop the owner of a sale abruptly
// (failover), block it past its lease (a zombie writer), take NATS nodes
// away (one: the service goes on; two: quorum lost, requests fail fast), and
// measure the token rate with one, two and three processes. Every test
// checks every success reply a shopper got against the decisions in the
// stream, and runs the auditor.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/embed"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/identity"
	"github.com/flashgate/flashgate/stream"
	"github.com/flashgate/flashgate/tokens"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterLeaseTTL is the writers' lease TTL in these tests.
const clusterLeaseTTL = 2 * time.Second

// natsCluster is a three-node NATS cluster in this process whose nodes can
// be stopped and started again on the same ports and store.
type natsCluster struct {
	*embed.Cluster
	dir   string
	names []string
	ports []int // client ports
	route []int // cluster (route) ports

	mu    sync.Mutex
	again []*server.Server // a node started again, by index (nil: the original runs or is stopped)
}

func startCluster(t *testing.T) *natsCluster {
	t.Helper()
	dir := t.TempDir()
	cl, err := embed.StartCluster(3, dir)
	if err != nil {
		t.Fatal(err)
	}
	c := &natsCluster{Cluster: cl, dir: dir, again: make([]*server.Server, len(cl.Servers))}
	t.Cleanup(c.shutdown)
	for _, s := range cl.Servers {
		ns := s.NATS()
		c.names = append(c.names, ns.Name())
		c.ports = append(c.ports, ns.Addr().(*net.TCPAddr).Port)
		c.route = append(c.route, ns.ClusterAddr().Port)
	}
	return c
}

func (c *natsCluster) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ns := range c.again {
		if ns != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
	}
	c.Cluster.Shutdown()
}

// index is the position of the node called name.
func (c *natsCluster) index(t *testing.T, name string) int {
	t.Helper()
	i := slices.Index(c.names, name)
	if i < 0 {
		t.Fatalf("no NATS node %q", name)
	}
	return i
}

// stop shuts node i down, as a machine lost: its connections and routes
// close.
func (c *natsCluster) stop(i int) {
	c.mu.Lock()
	ns := c.again[i]
	c.again[i] = nil
	c.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return
	}
	c.Servers[i].Shutdown()
}

// restart starts node i again with the options embed.StartCluster gave it:
// the same name, store directory, client and route ports and routes.
// (StartCluster offers no restart; these options mirror embed/cluster.go.)
// If a port was taken by another process while the node was down (outgoing
// connections draw their ports from the same range), the node starts once
// more on ports the OS picks, without a route to its own old port: the
// others' routes to that port then fail, but the node's own routes reach
// them, and clients learn its new address from the cluster's INFO.
func (c *natsCluster) restart(t *testing.T, i int) {
	t.Helper()
	ns := c.startNode(t, i, c.ports[i], c.route[i])
	if ns == nil {
		t.Logf("restart %s: its ports %d and %d were not both free; the OS picks others", c.names[i], c.ports[i], c.route[i])
		if ns = c.startNode(t, i, server.RANDOM_PORT, server.RANDOM_PORT); ns == nil {
			t.Fatalf("restart %s: not ready for connections on ports the OS picked", c.names[i])
		}
	}
	c.mu.Lock()
	c.again[i] = ns
	c.ports[i], c.route[i] = ns.Addr().(*net.TCPAddr).Port, ns.ClusterAddr().Port
	c.mu.Unlock()
}

// startNode starts node i on the given client and route ports (or
// server.RANDOM_PORT) with routes to every other node, and to itself when
// on its own route port; nil if it was not ready for connections within
// 10 s.
func (c *natsCluster) startNode(t *testing.T, i, port, route int) *server.Server {
	t.Helper()
	var routes []string
	for j, p := range c.route {
		if j != i || route == p {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
		}
	}
	opts := &server.Options{
		ServerName: c.names[i],
		JetStream:  true,
		StoreDir:   filepath.Join(c.dir, c.names[i]),
		Host:       "127.0.0.1",
		Port:       port,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 8 << 20,
		Cluster:    server.ClusterOpts{Name: "flashgate", Host: "127.0.0.1", Port: route},
		Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("restart %s: %v", c.names[i], err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil
	}
	return ns
}

// waitGroup waits for wg, at most d: the shoppers' waits are all bounded,
// so a longer wait means the machine is starved (seen with other heavy
// work on its two cores), and the test says so instead of hanging.
func waitGroup(t *testing.T, wg *sync.WaitGroup, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("the shoppers did not finish within %v (every wait of theirs is bounded: is the machine starved?)", d)
	}
}

// clusterJS is the test's own connection to the cluster.
func clusterJS(t *testing.T, urls string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// proc is a flashgate process as the shoppers see it.
type proc struct {
	name string
	app  *app.App
	node string       // its node id: what the lease bucket names
	down atomic.Bool  // crashed: shoppers go elsewhere
	log  *logRecorder // what it logged, if kept
}

func newProc(t *testing.T, name string, a *app.App) *proc {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.DataDir, "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	return &proc{name: name, app: a, node: strings.TrimSpace(string(b))}
}

// clusterConfig is a process's configuration on the cluster.
func clusterConfig(urls string) app.Config {
	return app.Config{NATSURL: urls, Replicas: 3, LeaseTTL: clusterLeaseTTL, DecisionWait: 5 * time.Second}
}

// startProcs starts n processes on urls sharing the first one's keys.
// Each keeps what it logs at info level and above.
func startProcs(t *testing.T, urls string, n int) []*proc {
	t.Helper()
	var ps []*proc
	for i := 1; i <= n; i++ {
		cfg := clusterConfig(urls)
		rec := &logRecorder{}
		cfg.Log = slog.New(rec)
		var a *app.App
		if i == 1 {
			a = startApp(t, cfg)
		} else {
			a = startPeer(t, ps[0].app, urls, cfg)
		}
		p := newProc(t, fmt.Sprintf("p%d", i), a)
		p.log = rec
		ps = append(ps, p)
	}
	return ps
}

// leaseOwner is the node the sale's lease names ("" when none).
func leaseOwner(js jetstream.JetStream, sale string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, events.LeaseBucket)
	if err != nil {
		return ""
	}
	e, err := kv.Get(ctx, sale)
	if err != nil {
		return ""
	}
	return string(e.Value())
}

// waitSaleEverywhere waits until every process knows the sale and its
// lease has an owner among them, and returns the owner.
func waitSaleEverywhere(t *testing.T, js jetstream.JetStream, ps []*proc, sale string) *proc {
	t.Helper()
	var owner *proc
	waitFor(t, 30*time.Second, func() error {
		for _, p := range ps {
			if _, ok := p.app.Front.Sale(sale); !ok {
				return fmt.Errorf("%s does not know sale %s yet", p.name, sale)
			}
		}
		node := leaseOwner(js, sale)
		for _, p := range ps {
			if p.node == node {
				owner = p
				return nil
			}
		}
		return fmt.Errorf("lease of %s names %q", sale, node)
	})
	return owner
}

// waitViews waits until every process's views (SQLite projections) have
// applied the whole stream.
func waitViews(t *testing.T, js jetstream.JetStream, ps []*proc) {
	t.Helper()
	waitFor(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		for _, p := range ps {
			seq, err := p.app.Store.LastSeq(ctx)
			if err != nil {
				return err
			}
			if seq < info.State.LastSeq {
				return fmt.Errorf("%s's views at %d of %d", p.name, seq, info.State.LastSeq)
			}
		}
		return nil
	})
}

// batchAt is a decision batch as stored.
type batchAt struct {
	seq uint64
	at  time.Time // when the stream stored it
	db  events.DecisionBatch
}

func (b batchAt) node() string { n, _, _ := strings.Cut(b.db.Writer, "/"); return n }

// settledBatches waits until the sale's writer has decided every request
// appended so far (its last batch's cursor reaches the sale's last request),
// then reads every decision batch. A shopper's success reply comes after its
// batch is stored; this wait keeps a check from racing the stream's own
// bookkeeping right after a load, and says so when it had to wait.
func settledBatches(t *testing.T, js jetstream.JetStream, sale string) []batchAt {
	t.Helper()
	start := time.Now()
	waited := false
	waitFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		db, _, ok, err := stream.LastDecision(ctx, st, sale)
		if err != nil {
			return err
		}
		if !ok {
			waited = true
			return fmt.Errorf("sale %s: no decision yet", sale)
		}
		reqs, err := st.GetLastMsgForSubject(ctx, events.RequestSubject(sale))
		if err != nil {
			return err
		}
		if db.Head.Cursor < reqs.Sequence {
			waited = true
			return fmt.Errorf("sale %s: decided up to %d, last request at %d", sale, db.Head.Cursor, reqs.Sequence)
		}
		return nil
	})
	if waited {
		t.Logf("sale %s: waited %v for the writer to decide the last requests", sale, time.Since(start).Round(time.Millisecond))
	}
	return decisionBatches(t, js, sale)
}

// decisionBatches reads every decision batch of the sale from the stream.
func decisionBatches(t *testing.T, js jetstream.JetStream, sale string) []batchAt {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	_, last, ok, err := stream.LastDecision(ctx, st, sale)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return nil
	}
	var out []batchAt
	err = stream.Read(ctx, st, events.DecisionSubject(sale), 1, last, func(m *jetstream.RawStreamMsg) error {
		db, err := events.DecodeDecisions(m.Data)
		if err != nil {
			return err
		}
		out = append(out, batchAt{seq: m.Sequence, at: m.Time, db: db})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// replies is every success reply shoppers got: token ids and order ids,
// with the shopper each was given to.
type replies struct {
	mu     sync.Mutex
	tokens map[string]string
	orders map[string]string
	counts map[string]int // "<proc> <kind> <status>[ <code>]" -> answers
}

func newReplies() *replies {
	return &replies{tokens: map[string]string{}, orders: map[string]string{}, counts: map[string]int{}}
}

func (r *replies) count(key string) {
	r.mu.Lock()
	r.counts[key]++
	r.mu.Unlock()
}

func (r *replies) token(id, shopper string) {
	r.mu.Lock()
	r.tokens[id] = shopper
	r.mu.Unlock()
}

func (r *replies) order(id, shopper string) {
	r.mu.Lock()
	r.orders[id] = shopper
	r.mu.Unlock()
}

func (r *replies) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.counts))
	for k := range r.counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %d\n", k, r.counts[k])
	}
	return b.String()
}

// checkInStream checks that every success reply is a decision in the
// stream, given to the same shopper.
func (r *replies) checkInStream(t *testing.T, batches []batchAt) {
	t.Helper()
	toks, ords := map[string]string{}, map[string]string{}
	for _, b := range batches {
		for _, e := range b.db.Events {
			switch d := e.Data.(type) {
			case *events.TokenIssued:
				toks[d.TokenID] = e.Shopper
			case *events.PurchaseAccepted:
				ords[d.OrderID] = e.Shopper
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, who := range r.tokens {
		if got, ok := toks[id]; !ok || got != who {
			t.Errorf("token %s replied to %s: the stream says %q (present %v)", id, who, got, ok)
		}
	}
	for id, who := range r.orders {
		if got, ok := ords[id]; !ok || got != who {
			t.Errorf("order %s replied to %s: the stream says %q (present %v)", id, who, got, ok)
		}
	}
	t.Logf("%d token and %d order success replies checked against %d decision batches", len(r.tokens), len(r.orders), len(batches))
}

// shoppers signs sessions the way the processes do (they share the keys),
// without an HTTP round trip each.
type shoppers struct {
	sessions *identity.Sessions
	ids      *events.IDs
}

func newShoppers(t *testing.T, a *app.App) *shoppers {
	t.Helper()
	keys, err := tokens.LoadKeyFile(filepath.Join(a.DataDir, "keys", "sessions.json"))
	if err != nil {
		t.Fatal(err)
	}
	return &shoppers{sessions: identity.NewSessions(keys, 0, nil), ids: events.NewIDs()}
}

// shopper is one virtual shopper and what it got.
type shopper struct {
	id, session string
	token       string
}

func (s *shoppers) new(t testing.TB) *shopper {
	id := s.ids.New(time.Now())
	sess, _, err := s.sessions.Issue(id)
	if err != nil {
		t.Error(err)
	}
	return &shopper{id: id, session: sess}
}

// racer drives shoppers over several processes: each shopper asks its home
// process first and moves to the next one on a transport error or a 503
// (bounded), and follows a 202 pending by polling, as a client would.
type racer struct {
	hc    *http.Client
	procs []*proc
	sale  string
	rep   *replies
	// onOrder, if set, is told of each accepted order.
	onOrder func()
}

func newHTTPClient() *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute,
		DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	}}
}

// call sends a request, moving on to another live process on a transport
// error or a 503, up to 60 tries (about 15 s).
func (r *racer) call(home int, method, path, session string, hdr map[string]string, kind string) (reply, bool) {
	for n := 0; n < 60; n++ {
		p := r.procs[(home+n)%len(r.procs)]
		if p.down.Load() {
			continue
		}
		rep, err := try(r.hc, p.app.URL, method, path, session, hdr)
		if err != nil {
			r.rep.count(p.name + " " + kind + " transport-error")
			time.Sleep(100 * time.Millisecond)
			continue
		}
		code := rep.str("error")
		if code == "" {
			code = rep.str("status")
		}
		r.rep.count(fmt.Sprintf("%s %s %d %s", p.name, kind, rep.Status, code))
		if rep.Status == http.StatusServiceUnavailable {
			time.Sleep(250 * time.Millisecond)
			continue
		}
		return rep, true
	}
	return reply{}, false
}

// poll follows a pending request on the live processes until it is
// decided (at most 30 s).
func (r *racer) poll(home int, s *shopper, id string) (reply, bool) {
	deadline := time.Now().Add(30 * time.Second)
	for n := 0; time.Now().Before(deadline); n++ {
		p := r.procs[(home+n)%len(r.procs)]
		if p.down.Load() {
			continue
		}
		rep, err := try(r.hc, p.app.URL, "GET", "/api/v1/requests/"+id, s.session, nil)
		if err == nil && rep.Status == http.StatusOK && rep.str("status") != "pending" {
			return rep, true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return reply{}, false
}

// shop is one shopper's race: a token, then a purchase with it.
func (r *racer) shop(home int, s *shopper) {
	rep, ok := r.call(home, "POST", "/api/v1/sales/"+r.sale+"/tokens", s.session, nil, "token")
	if !ok {
		return
	}
	if rep.Status == http.StatusAccepted {
		if rep, ok = r.poll(home, s, rep.str("requestId")); !ok {
			r.rep.count("token pending unresolved")
			return
		}
		r.rep.count("token polled " + rep.str("status"))
	}
	if rep.str("tokenId") == "" || rep.str("token") == "" {
		return // refused: sold out, quota gone
	}
	s.token = rep.str("token")
	r.rep.token(rep.str("tokenId"), s.id)
	rep, ok = r.call(home, "POST", "/api/v1/sales/"+r.sale+"/purchases", s.session, map[string]string{"X-Purchase-Token": s.token}, "purchase")
	if !ok {
		return
	}
	if rep.Status == http.StatusAccepted && rep.str("status") == "pending" {
		if rep, ok = r.poll(home, s, rep.str("requestId")); !ok {
			r.rep.count("purchase pending unresolved")
			return
		}
		r.rep.count("purchase polled " + rep.str("status"))
	}
	// An accepted purchase, or a retried one answered token_used with the
	// order its token bought: either reply names an order.
	if id := rep.str("orderId"); id != "" {
		r.rep.order(id, s.id)
		if r.onOrder != nil && rep.str("error") == "" {
			r.onOrder()
		}
	}
}

// TestClusterFailover: 5,000 shoppers race for stock 300 over three
// processes; when a third of the stock is sold the owner of the sale
// crashes. Another process takes over within the lease TTL + 2 s; every
// success reply before and after is in the stream; sold <= stock; the
// audit passes.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster and a failover: about 10 s")
	}
	cl := startCluster(t)
	ps := startProcs(t, cl.URLs(), 3)
	js := clusterJS(t, cl.URLs())
	const sale, stock, nShoppers = "failover", 300, 5000
	c := newClient(t, ps[0].app)
	c.createSale(ps[0].app.AdminToken, map[string]any{"id": sale, "stock": stock, "quotaBuffer": 1.2, "tokenTTL": "10m"})
	owner := waitSaleEverywhere(t, js, ps, sale)
	t.Logf("the owner of the sale is %s (node %s)", owner.name, owner.node)

	rep := newReplies()
	var accepted atomic.Int64
	crash := make(chan struct{})
	r := &racer{hc: newHTTPClient(), procs: ps, sale: sale, rep: rep, onOrder: func() {
		if accepted.Add(1) == stock/3 {
			close(crash)
		}
	}}
	var crashedAt time.Time
	crashed := make(chan struct{})
	go func() {
		defer close(crashed)
		<-crash
		crashedAt = time.Now()
		owner.down.Store(true)
		owner.app.Crash()
	}()
	sh := newShoppers(t, ps[0].app)
	all := make([]*shopper, nShoppers)
	for i := range all {
		all[i] = sh.new(t)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(all) {
					return
				}
				r.shop(i%len(ps), all[i])
			}
		}()
	}
	waitGroup(t, &wg, 3*time.Minute)
	t.Logf("race over in %v; answers:\n%s", time.Since(start).Round(time.Millisecond), rep.summary())
	select {
	case <-crashed:
	default:
		t.Fatalf("the owner never crashed: only %d orders accepted", accepted.Load())
	}

	survivor := ps[(slices.Index(ps, owner)+1)%len(ps)]
	batches := decisionBatches(t, js, sale)
	rep.checkInStream(t, batches)
	// The new owner's first batch, and nothing from the old one after it.
	var first *batchAt
	for i := range batches {
		b := &batches[i]
		if first == nil && b.node() != owner.node {
			first = b
		}
		if first != nil && b.node() == owner.node {
			t.Errorf("batch %d (version %d) by the old owner %s after the new owner's first (version %d)",
				b.seq, b.db.Head.Version, b.db.Writer, first.db.Head.Version)
		}
	}
	if first == nil {
		t.Fatal("no batch by another process after the crash")
	}
	took := first.at.Sub(crashedAt)
	t.Logf("failover: crash at %s, first batch by the new owner %s (version %d) stored %v later (lease TTL %v)",
		crashedAt.Format("15:04:05.000"), first.db.Writer, first.db.Head.Version, took.Round(time.Millisecond), clusterLeaseTTL)
	if took > clusterLeaseTTL+2*time.Second {
		t.Errorf("failover took %v, want within lease TTL + 2 s = %v", took, clusterLeaseTTL+2*time.Second)
		for _, p := range ps {
			if p != owner {
				t.Logf("%s logged:\n  %s", p.name, strings.Join(p.log.find(""), "\n  "))
			}
		}
	}
	head := batches[len(batches)-1].db.Head
	t.Logf("final head: sold %d of %d, tokens issued %d (quota %d), %d order replies", head.Redeemed, head.Stock, head.Issued, head.Quota, len(rep.orders))
	if head.Redeemed > stock || int64(len(rep.orders)) > stock {
		t.Errorf("oversold: %d sold, %d order replies, stock %d", head.Redeemed, len(rep.orders), stock)
	}
	if head.Issued-head.Expired > head.Quota {
		t.Errorf("quota exceeded: %d tokens held, quota %d", head.Issued-head.Expired, head.Quota)
	}
	if head.Redeemed < stock {
		t.Logf("note: %d units left unsold (shoppers whose retries ran out)", stock-head.Redeemed)
	}
	waitFor(t, 30*time.Second, func() error { // the survivor's views have the whole sale
		var n int
		if err := survivor.app.Store.DB().QueryRow(`SELECT COUNT(*) FROM orders WHERE sale = ?`, sale).Scan(&n); err != nil {
			return err
		}
		if int64(n) != head.Redeemed {
			return fmt.Errorf("projection has %d orders, the head %d", n, head.Redeemed)
		}
		return nil
	})
	runAudit(t, survivor.app)
}

// pausableProxy forwards TCP connections to a NATS server and can stop
// copying bytes in either direction without closing anything: the process
// behind it is blocked, not dead.
type pausableProxy struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	cond     *sync.Cond
	upHeld   bool // client to server held
	downHeld bool // server to client held
	closed   bool
	conns    []net.Conn
}

func startProxy(t *testing.T, target string) *pausableProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pausableProxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *pausableProxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *pausableProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go p.pipe(s, c, true)
		go p.pipe(c, s, false)
	}
}

// pipe copies src to dst, holding each chunk while its direction is held.
func (p *pausableProxy) pipe(dst, src net.Conn, up bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for !p.closed && (up && p.upHeld || !up && p.downHeld) {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *pausableProxy) hold(up, down bool) {
	p.mu.Lock()
	p.upHeld, p.downHeld = up, down
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *pausableProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.cond.Broadcast()
}

// logRecorder keeps the messages a process logs (the last 10,000).
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelInfo }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler            { return l }
func (l *logRecorder) WithGroup(string) slog.Handler                 { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Time.Format("15:04:05.000 "))
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	if len(l.msgs) < 10000 {
		l.msgs = append(l.msgs, b.String())
	}
	l.mu.Unlock()
	return nil
}

// find returns the logged lines that contain s.
func (l *logRecorder) find(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, m := range l.msgs {
		if strings.Contains(m, s) {
			out = append(out, m)
		}
	}
	return out
}

// TestClusterZombieWriter: the owner of a sale is blocked (its NATS
// connection goes through a proxy that stops forwarding) past its lease
// while it is committing; another process takes the sale over; then the
// old owner wakes up and its pending commit reaches the stream. Its CAS is
// refused, it answers no shopper from it, and it steps down; every success
// reply is in the stream, and the audit passes.
func TestClusterZombieWriter(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster and a blocked owner: about 10 s")
	}
	cl := startCluster(t)
	js := clusterJS(t, cl.URLs())
	px := startProxy(t, cl.Servers[0].ClientURL()[len("nats://"):])
	zlog := &logRecorder{}
	zcfg := clusterConfig(px.URL())
	zcfg.Log = slog.New(zlog)
	zcfg.DecisionWait = 2 * time.Second
	za := startApp(t, zcfg)
	z := newProc(t, "zombie", za)
	const sale = "zombie"
	c := newClient(t, za)
	c.createSale(za.AdminToken, map[string]any{"id": sale, "stock": 100000, "tokenTTL": "10m"})
	// The zombie-to-be owns the sale before the others start.
	waitFor(t, 15*time.Second, func() error {
		if o := leaseOwner(js, sale); o != z.node {
			return fmt.Errorf("lease names %q, not the zombie %s", o, z.node)
		}
		return nil
	})
	ps := []*proc{z}
	for _, name := range []string{"p2", "p3"} {
		cfg := clusterConfig(cl.URLs())
		rec := &logRecorder{}
		cfg.Log = slog.New(rec)
		p := newProc(t, name, startPeer(t, za, cl.URLs(), cfg))
		p.log = rec
		ps = append(ps, p)
	}
	z.log = zlog
	defer func() {
		if t.Failed() {
			for _, p := range ps {
				for _, l := range p.log.find("") {
					t.Logf("%s: %s", p.name, l)
				}
			}
		}
	}()
	if owner := waitSaleEverywhere(t, js, ps, sale); owner != z {
		t.Fatalf("the owner is %s, not the zombie", owner.name)
	}

	// Shoppers ask for tokens all along, one request each, at every
	// process; those of the zombie get no second chance elsewhere.
	rep := newReplies()
	sh := newShoppers(t, za)
	hc := newHTTPClient()
	poller := &racer{hc: hc, procs: ps[1:], sale: sale, rep: rep}
	stop := make(chan struct{})
	// phase: 0 before the zombie is blocked, 1 while it is, 2 after. An
	// answer counted "blocked" left the zombie while it was blocked.
	var phase atomic.Int32
	var blockedAt atomic.Int64 // unix nanos
	phases := []string{"before", "blocked", "after"}
	var wg sync.WaitGroup
	for w := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				p := ps[(w+n)%len(ps)]
				s := sh.new(t)
				sent := phase.Load()
				r, err := try(hc, p.app.URL, "POST", "/api/v1/sales/"+sale+"/tokens", s.session, nil)
				when := ""
				switch got := phase.Load(); {
				case p != z || sent == 0 && got == 0:
				case sent == 2:
					when = " (after)"
				default:
					when = fmt.Sprintf(" (sent %s, answered %s)", phases[sent], phases[got])
				}
				if err != nil {
					rep.count(p.name + " token transport-error" + when)
					continue
				}
				rep.count(fmt.Sprintf("%s token %d%s", p.name, r.Status, when))
				if p == z && phase.Load() == 1 && r.Status != http.StatusServiceUnavailable && r.Status != http.StatusAccepted &&
					time.Since(time.Unix(0, blockedAt.Load())) > 250*time.Millisecond {
					// Only a success not in the stream would be wrong (every
					// one is checked below), but a blocked process has no
					// way to learn a decision (what passed the proxy just
					// before the block may still be on its way).
					t.Errorf("the blocked zombie answered %d %s", r.Status, r.Raw)
				}
				if r.Status == http.StatusServiceUnavailable && r.Header.Get("Retry-After") == "" {
					t.Errorf("%s: 503 without Retry-After: %s", p.name, r.Raw)
				}
				if r.Status == http.StatusAccepted {
					// Polled at the others: the zombie may be blocked.
					var ok bool
					if r, ok = poller.poll(0, s, r.str("requestId")); !ok {
						rep.count("token pending unresolved")
						continue
					}
					rep.count("token polled " + r.str("status"))
				}
				if id := r.str("tokenId"); id != "" {
					rep.token(id, s.id)
				}
			}
		}()
	}
	defer func() { // on an early end: stop the shoppers (each of their waits is bounded)
		select {
		case <-stop:
			return
		default:
			close(stop)
		}
		done := make(chan struct{})
		go func() {
			wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(time.Minute):
		}
	}()
	time.Sleep(time.Second) // batches flow

	// Block the zombie: first what it sends, so its writer, still fed the
	// others' requests, is caught committing; then everything.
	pausedAt := time.Now()
	px.hold(true, false)
	time.Sleep(300 * time.Millisecond)
	px.hold(true, true)
	blockedAt.Store(time.Now().UnixNano())
	phase.Store(1)
	var newOwner *proc
	waitFor(t, clusterLeaseTTL+5*time.Second, func() error {
		o := leaseOwner(js, sale)
		for _, p := range ps[1:] {
			if p.node == o {
				newOwner = p
				return nil
			}
		}
		return fmt.Errorf("lease still names %q", o)
	})
	tookLease := time.Since(pausedAt)
	var takeover batchAt
	// The failover test holds the takeover to its bound; here a loaded
	// runner once took 10 s from the lease to the new owner's first batch.
	waitFor(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		db, seq, ok, err := stream.LastDecision(ctx, st, sale)
		if err != nil || !ok {
			return fmt.Errorf("last decision: %v", err)
		}
		n, _, _ := strings.Cut(db.Writer, "/")
		if n != newOwner.node {
			return fmt.Errorf("the last batch is still by %s", db.Writer)
		}
		takeover = batchAt{seq: seq, db: db}
		return nil
	})
	t.Logf("zombie blocked: lease taken by %s after %v, its batch %d (version %d) committed after %v",
		newOwner.name, tookLease.Round(time.Millisecond), takeover.seq, takeover.db.Head.Version, time.Since(pausedAt).Round(time.Millisecond))

	// Keep it blocked a little longer, so that its shoppers meet it blocked
	// (their appends time out), but not so long that its commit gives up
	// retrying (5 tries of 2 s): it must still be trying when it wakes.
	time.Sleep(time.Until(pausedAt.Add(clusterLeaseTTL + 2500*time.Millisecond)))

	// Wake the zombie: what it sent while blocked reaches the cluster now.
	// Its commit retries for about 10 s (5 tries of 2 s) from the block.
	// When the cluster itself took nearly that long to commit the takeover
	// batch (a loaded runner once took 12 s), the zombie may give up its
	// commit before it meets the refusal, and the stream's CAS is not put to
	// the test here (handlers' writer tests do it, on one server and on R3).
	// The rest holds either way: it commits nothing after the takeover and
	// serves as a front again.
	phase.Store(2) // before the bytes flow: an answer counted "blocked" left while blocked
	px.hold(false, false)
	resumedAt := time.Now()
	late := resumedAt.Sub(pausedAt) > 9*time.Second
	var gaveUp []string
	waitFor(t, 15*time.Second, func() error {
		if len(zlog.find("writer lost the sale")) > 0 {
			return nil
		}
		if gaveUp = zlog.find("outcome unknown"); late && len(gaveUp) > 0 {
			return nil
		}
		return errors.New("the zombie has not noticed it lost the sale")
	})
	for _, l := range zlog.find("writer lost the sale") {
		t.Logf("zombie: %s", l)
	}
	switch {
	case len(zlog.find("commit refused")) > 0:
	case late && len(gaveUp) > 0:
		t.Logf("woken %v after the block, the zombie had given up its commit, so its refusal is not exercised in this run: %s",
			resumedAt.Sub(pausedAt).Round(time.Millisecond), gaveUp[0])
	default:
		t.Errorf("the zombie's commit was not refused by the stream (it had none in flight?); its log: %q", zlog.find("writer"))
	}
	// It keeps serving as a front: its shoppers get their tokens again.
	waitFor(t, 30*time.Second, func() error {
		rep.mu.Lock()
		defer rep.mu.Unlock()
		if rep.counts["zombie token 201 (after)"] == 0 {
			return errors.New("the zombie has issued no token since it woke")
		}
		return nil
	})
	close(stop)
	waitGroup(t, &wg, 3*time.Minute)
	t.Logf("zombie resumed %v ago; answers:\n%s", time.Since(resumedAt).Round(time.Millisecond), rep.summary())
	if o := leaseOwner(js, sale); o != newOwner.node {
		t.Errorf("after the zombie woke the lease names %q, not the new owner %s", o, newOwner.node)
	}
	rep.mu.Lock()
	zOK := rep.counts["zombie token 201 (after)"]
	rep.mu.Unlock()
	if zOK == 0 {
		t.Errorf("the zombie issued no token after it woke")
	}

	batches := decisionBatches(t, js, sale)
	for _, b := range batches {
		if b.seq > takeover.seq && b.node() == z.node {
			t.Errorf("batch %d (version %d) by the zombie %s after the takeover", b.seq, b.db.Head.Version, b.db.Writer)
		}
	}
	for i := 1; i < len(batches); i++ {
		if batches[i].db.Head.Version != batches[i-1].db.Head.Version+1 {
			t.Errorf("batch versions jump from %d to %d", batches[i-1].db.Head.Version, batches[i].db.Head.Version)
		}
	}
	rep.checkInStream(t, batches)
	runAudit(t, newOwner.app)
}

// whenDecided says which writer decided the request and when its batch
// was stored, since t0.
func whenDecided(batches []batchAt, request string, t0 time.Time) string {
	for _, b := range batches {
		for _, e := range b.db.Events {
			if e.Request == request {
				return fmt.Sprintf("decided by %s, batch stored %v after the loss", b.db.Writer, b.at.Sub(t0).Round(time.Millisecond))
			}
		}
	}
	return "request " + request + " not decided"
}

// tokenOnce is one fresh shopper's token request and how long it took.
func tokenOnce(t *testing.T, hc *http.Client, sh *shoppers, base, sale string) (reply, time.Duration, error) {
	s := sh.new(t)
	start := time.Now()
	r, err := try(hc, base, "POST", "/api/v1/sales/"+sale+"/tokens", s.session, nil)
	return r, time.Since(start), err
}

// servedToken is the story of one shopper's token: the answers it got,
// retried until a token came.
type servedToken struct {
	took    time.Duration
	retries int
	request string   // the id of the request that got the token
	answers []string // each answer and how long it took
	err     error    // no token within the bound
}

// serveEach has every process serve a token at once (serveToken).
func serveEach(t *testing.T, hc *http.Client, sh *shoppers, rep *replies, ps []*proc, sale string, bound time.Duration) []servedToken {
	t.Helper()
	var wg sync.WaitGroup
	out := make([]servedToken, len(ps))
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = serveToken(t, hc, sh, rep, ps, p, sale, bound)
		}()
	}
	waitGroup(t, &wg, 3*time.Minute)
	return out
}

// serveToken asks p for a fresh shopper's token, again and again (250 ms
// apart; a 202 pending is polled) until one is issued or bound passes.
func serveToken(t *testing.T, hc *http.Client, sh *shoppers, rep *replies, ps []*proc, p *proc, sale string, bound time.Duration) servedToken {
	s := sh.new(t)
	start := time.Now()
	var st servedToken
	for {
		t0 := time.Now()
		r, err := try(hc, p.app.URL, "POST", "/api/v1/sales/"+sale+"/tokens", s.session, nil)
		if err != nil {
			st.answers = append(st.answers, fmt.Sprintf("%v after %v", err, time.Since(t0).Round(time.Millisecond)))
		} else {
			st.request = r.Header.Get("X-Request-Id")
			st.answers = append(st.answers, fmt.Sprintf("%d %s%s after %v", r.Status, r.str("error"), r.str("status"), time.Since(t0).Round(time.Millisecond)))
		}
		if err == nil && r.Status == http.StatusAccepted {
			t0 = time.Now()
			rr := &racer{hc: hc, procs: ps, sale: sale, rep: rep}
			r, _ = rr.poll(slices.Index(ps, p), s, r.str("requestId"))
			st.answers = append(st.answers, fmt.Sprintf("polled %s after %v", r.str("status"), time.Since(t0).Round(time.Millisecond)))
		}
		if err == nil && r.str("tokenId") != "" {
			rep.token(r.str("tokenId"), s.id)
			st.took = time.Since(start)
			return st
		}
		if time.Since(start) > bound {
			st.err = fmt.Errorf("token at %s not served within %v: %s", p.name, bound, strings.Join(st.answers, "; "))
			return st
		}
		st.retries++
		time.Sleep(250 * time.Millisecond)
	}
}

// serveTokens serves n tokens, one after the other, spread over ps; it
// returns the slowest.
func serveTokens(t *testing.T, hc *http.Client, sh *shoppers, rep *replies, ps []*proc, sale string, n int, bound time.Duration) (worst servedToken, retries int) {
	t.Helper()
	for i := range n {
		st := serveToken(t, hc, sh, rep, ps, ps[i%len(ps)], sale, bound)
		if st.err != nil {
			t.Fatal(st.err)
		}
		retries += st.retries
		if st.took > worst.took {
			worst = st
		}
	}
	return worst, retries
}

// consumerNode is the NATS node that serves the stream consumer filtered on
// subject ("" when there is none).
func consumerNode(t *testing.T, st jetstream.Stream, subject string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lister := st.ListConsumers(ctx)
	for ci := range lister.Info() {
		if ci.Cluster != nil && (ci.Config.FilterSubject == subject || slices.Contains(ci.Config.FilterSubjects, subject)) {
			return ci.Cluster.Leader
		}
	}
	return ""
}

// TestClusterNodeLossAndQuorum: with one NATS node lost the service goes
// on; with two lost (no quorum) token requests are answered fast with 503
// and Retry-After instead of hanging; with the nodes back the service
// resumes. The node lost first is the one the sale's writer reads its
// requests from, the worst one to lose.
func TestClusterNodeLossAndQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster losing nodes: about 20 s")
	}
	cl := startCluster(t)
	ps := startProcs(t, cl.URLs(), 2)
	js := clusterJS(t, cl.URLs())
	const sale = "quorum"
	c := newClient(t, ps[0].app)
	c.createSale(ps[0].app.AdminToken, map[string]any{"id": sale, "stock": 1000000, "tokenTTL": "10m"})
	owner := waitSaleEverywhere(t, js, ps, sale)
	sh := newShoppers(t, ps[0].app)
	hc := newHTTPClient()
	rep := newReplies()
	worst, _ := serveTokens(t, hc, sh, rep, ps, sale, 20, 10*time.Second)
	t.Logf("all nodes up: 20 tokens, slowest %v", worst.took.Round(time.Millisecond))

	// One node lost.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	cancel()
	if err != nil || info.Cluster == nil {
		t.Fatalf("stream info: %v", err)
	}
	reader := consumerNode(t, st, events.RequestSubject(sale))
	if reader == "" {
		t.Fatal("the writer's request consumer is not in the stream's list")
	}
	first := cl.index(t, reader)
	lost := time.Now()
	cl.stop(first)
	t.Logf("node %s lost: it served the writer's (%s) request consumer; the stream leader was %s", reader, owner.name, info.Cluster.Leader)
	// Each process serves again: how long after the loss?
	back := serveEach(t, hc, sh, rep, ps, sale, 30*time.Second)
	batches := decisionBatches(t, js, sale)
	for i, p := range ps {
		if back[i].err != nil {
			t.Errorf("one node down: %v", back[i].err)
			continue
		}
		t.Logf("one node down: %s served a token %v after the loss (%s; %s)", p.name, back[i].took.Round(time.Millisecond),
			strings.Join(back[i].answers, "; "), whenDecided(batches, back[i].request, lost))
	}
	if slowest := max(back[0].took, back[1].took); slowest > clusterLeaseTTL+2*time.Second {
		// Not an invariant broken (every request was answered, 202 pending
		// at worst, and decided later), but slow: the writer's ordered
		// consumer lived on the lost node and is replaced only after two
		// missed idle heartbeats (nats.go's default for ordered consumers is
		// 5 s); a process connected to that node resets at once on
		// reconnecting.
		t.Logf("NOTE: one node down: decisions stalled for %v (more than the lease TTL + 2 s)", slowest.Round(time.Millisecond))
	}
	worst, retries := serveTokens(t, hc, sh, rep, ps, sale, 30, 15*time.Second)
	t.Logf("one node down: 30 more tokens, slowest %v (%s), %d retries", worst.took.Round(time.Millisecond), strings.Join(worst.answers, "; "), retries)

	// Two nodes lost: no quorum. Every request is answered, fast, 503 with
	// Retry-After. (A request waits at most for the append before it and
	// its own, 2 s each, plus a second: front.Pending.Wait's bound.)
	second := (first + 1) % 3
	cl.stop(second)
	t.Logf("node %s lost too: quorum gone", cl.names[second])
	time.Sleep(500 * time.Millisecond)
	const bound = 7 * time.Second
	var (
		wg      sync.WaitGroup
		slowest atomic.Int64
	)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := ps[i%len(ps)]
			r, took, err := tokenOnce(t, hc, sh, p.app.URL, sale)
			for old := slowest.Load(); int64(took) > old && !slowest.CompareAndSwap(old, int64(took)); old = slowest.Load() {
			}
			switch {
			case err != nil:
				t.Errorf("%s without quorum: %v after %v", p.name, err, took)
			case took > bound:
				t.Errorf("%s without quorum: answered after %v (%d %s), want within %v", p.name, took, r.Status, r.Raw, bound)
			case r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "":
				t.Errorf("%s without quorum: %d (Retry-After %q) %s after %v, want 503 with Retry-After", p.name, r.Status, r.Header.Get("Retry-After"), r.Raw, took)
			}
		}()
	}
	waitGroup(t, &wg, 3*time.Minute)
	t.Logf("without quorum: 12 token requests answered 503 with Retry-After, slowest after %v", time.Duration(slowest.Load()).Round(time.Millisecond))
	for _, p := range ps { // the process is alive; only its stream is away
		if h := newClient(t, p.app).do("GET", "/healthz", "", nil, nil); h.Status != http.StatusOK {
			t.Errorf("%s healthz without quorum: %d", p.name, h.Status)
		}
	}

	// The nodes come back: the service resumes.
	restarted := time.Now()
	cl.restart(t, first)
	cl.restart(t, second)
	back = serveEach(t, hc, sh, rep, ps, sale, 60*time.Second)
	for i, p := range ps {
		if back[i].err != nil {
			t.Errorf("nodes back: %v", back[i].err)
			continue
		}
		t.Logf("nodes back: %s served a token %v after the restart (%s)", p.name, back[i].took.Round(time.Millisecond), strings.Join(back[i].answers, "; "))
	}
	worst, retries = serveTokens(t, hc, sh, rep, ps, sale, 30, 15*time.Second)
	t.Logf("after the quorum returned: 30 tokens, slowest %v, %d retries (%v after the restart)", worst.took.Round(time.Millisecond), retries,
		time.Since(restarted).Round(time.Millisecond))
	rep.checkInStream(t, settledBatches(t, js, sale))
	runAudit(t, ps[0].app)
}

// TestClusterTokenRate measures token requests issued per second with one,
// two and three processes on the R3 cluster: a fixed closed load (48
// requests in flight, each a fresh shopper's, spread evenly over the
// processes) for two rounds of 3 s each; the better round is the figure
// (other work on the machine makes single rounds noisy). All of it shares
// the machine's cores, so the figures show the cost of more processes, not
// a speed-up.
func TestClusterTokenRate(t *testing.T) {
	if testing.Short() {
		t.Skip("a measurement on a three-node cluster: about 25 s")
	}
	cl := startCluster(t)
	js := clusterJS(t, cl.URLs())
	first := startApp(t, clusterConfig(cl.URLs()))
	ps := []*proc{newProc(t, "p1", first)}
	sh := newShoppers(t, first)
	hc := newHTTPClient()
	const inFlight, measure, rounds = 48, 3 * time.Second, 2
	// round runs the load once against ps and describes it.
	round := func(sale string, rep *replies) (rate float64, line string) {
		pool := make([]*shopper, 60000)
		for i := range pool {
			pool[i] = sh.new(t)
		}
		var next, issued, other atomic.Int64
		lat := make([]time.Duration, len(pool))
		deadline := time.Now().Add(measure)
		start := time.Now()
		var wg sync.WaitGroup
		for range inFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					i := int(next.Add(1) - 1)
					if i >= len(pool) {
						return
					}
					s := pool[i]
					t0 := time.Now()
					r, err := try(hc, ps[i%len(ps)].app.URL, "POST", "/api/v1/sales/"+sale+"/tokens", s.session, nil)
					lat[i] = time.Since(t0)
					if err == nil && r.Status == http.StatusCreated {
						issued.Add(1)
						rep.token(r.str("tokenId"), s.id)
					} else {
						other.Add(1)
					}
				}
			}()
		}
		waitGroup(t, &wg, 3*time.Minute)
		elapsed := time.Since(start)
		done := min(int(next.Load()), len(pool))
		if done == len(pool) {
			t.Logf("note: the shopper pool ran out before %v", measure)
		}
		if other.Load() > 0 {
			t.Errorf("%d process(es): %d requests not answered 201", len(ps), other.Load())
		}
		l := slices.Clone(lat[:done])
		slices.Sort(l)
		q := func(f float64) time.Duration {
			return l[min(len(l)-1, int(f*float64(len(l))))].Round(100 * time.Microsecond)
		}
		rate = float64(issued.Load()) / elapsed.Seconds()
		return rate, fmt.Sprintf("%.0f tokens/s (%d issued in %v; p50 %v, p99 %v)", rate, issued.Load(), elapsed.Round(time.Millisecond), q(0.5), q(0.99))
	}
	var lines []string
	for n := 1; n <= 3; n++ {
		if n > 1 {
			ps = append(ps, newProc(t, fmt.Sprintf("p%d", n), startPeer(t, first, cl.URLs(), clusterConfig(cl.URLs()))))
		}
		sale := fmt.Sprintf("rate%d", n)
		newClient(t, first).createSale(first.AdminToken, map[string]any{"id": sale, "stock": 10000000, "tokenTTL": "10m"})
		owner := waitSaleEverywhere(t, js, ps, sale)
		for i := range 20 { // warm: the writer runs, the connections are open
			waitFor(t, 10*time.Second, func() error {
				r, _, err := tokenOnce(t, hc, sh, ps[i%n].app.URL, sale)
				if err != nil || r.Status != http.StatusCreated {
					return fmt.Errorf("warm-up: %d %v", r.Status, err)
				}
				return nil
			})
		}
		rep := newReplies()
		best := 0.0
		var each []string
		for range rounds {
			waitViews(t, js, ps) // the views catch up first (a new process's, the last round's): not part of the figure
			rate, line := round(sale, rep)
			best = max(best, rate)
			each = append(each, line)
		}
		line := fmt.Sprintf("%d process(es): %.0f tokens/s (writer %s; rounds: %s)", n, best, owner.name, strings.Join(each, "; "))
		t.Log(line)
		lines = append(lines, line)
		rep.checkInStream(t, settledBatches(t, js, sale))
	}
	t.Logf("token rate on the R3 cluster (in-process, shared cores):\n  %s", strings.Join(lines, "\n  "))
	runAudit(t, first)
}

// TestClusterSleepingSale: on a NATS cluster, a sale whose writer fell
// asleep (--writer-idle) in one process is woken by the requests another
// process appends (through another NATS server): a token, then the
// purchase with it. The owner keeps the lease while asleep, so every batch
// is its own.
func TestClusterSleepingSale(t *testing.T) {
	cl := startCluster(t)
	js := clusterJS(t, cl.URLs())
	cfg := clusterConfig(cl.URLs())
	cfg.WriterIdle = 300 * time.Millisecond
	first := startApp(t, cfg)
	ps := []*proc{newProc(t, "p1", first), newProc(t, "p2", startPeer(t, first, cl.URLs(), cfg))}
	newClient(t, first).createSale(first.AdminToken, map[string]any{"id": "s", "stock": 5})
	owner := waitSaleEverywhere(t, js, ps, "s")
	other := ps[0]
	if owner == ps[0] {
		other = ps[1]
	}
	asleep := func() error {
		if s := owner.app.Asleep(); !slices.Contains(s, "s") {
			return fmt.Errorf("%s: asleep %v", owner.name, s)
		}
		return nil
	}
	sh := newShoppers(t, first)
	hc := newHTTPClient()
	s := sh.new(t)
	waitFor(t, 10*time.Second, asleep)
	tok, err := try(hc, other.app.URL, "POST", "/api/v1/sales/s/tokens", s.session, nil)
	if err != nil || tok.Status != http.StatusCreated {
		t.Fatalf("token through %s for a sale asleep in %s: %d %s %v", other.name, owner.name, tok.Status, tok.Raw, err)
	}
	waitFor(t, 10*time.Second, asleep)
	r, err := try(hc, other.app.URL, "POST", "/api/v1/sales/s/purchases", s.session, map[string]string{"X-Purchase-Token": tok.str("token")})
	if err != nil || r.Status != http.StatusAccepted || r.str("status") != "accepted" {
		t.Fatalf("purchase through %s: %d %s %v", other.name, r.Status, r.Raw, err)
	}
	for _, b := range decisionBatches(t, js, "s") {
		if b.node() != owner.node {
			t.Errorf("batch %d written by %s, not the lease owner %s", b.db.Head.Version, b.node(), owner.node)
		}
	}
}
