package app_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
)

// TestSalesSpread: with two processes up, new sales are written for by
// both, not all by the first.
func TestSalesSpread(t *testing.T) {
	ns := startNATS(t)
	a := startApp(t, app.Config{NATSURL: ns.ClientURL(), Demo: false, LeaseTTL: time.Second})
	b := startPeer(t, a, ns.ClientURL(), app.Config{Demo: false, LeaseTTL: time.Second})
	// Both have been heard (a heartbeat every 2 s).
	waitFor(t, 10*time.Second, func() error {
		v, err := a.Cluster(context.Background())
		if err != nil || len(v.Nodes) != 2 {
			return fmt.Errorf("cluster: %+v %v", v, err)
		}
		return nil
	})
	c := newClient(t, a)
	for i := range 6 {
		c.createSale(a.AdminToken, map[string]any{"id": fmt.Sprint("s", i), "stock": 5})
		time.Sleep(300 * time.Millisecond)
	}
	waitFor(t, 30*time.Second, func() error {
		v, err := b.Cluster(context.Background())
		if err != nil {
			return err
		}
		owners := map[string]int{}
		for _, l := range v.Leases {
			owners[l.Owner]++
		}
		if len(v.Leases) != 6 || len(owners) != 2 {
			return fmt.Errorf("leases by owner: %v", owners)
		}
		for o, n := range owners {
			if n < 2 {
				return fmt.Errorf("%s writes for %d of 6 sales", o, n)
			}
		}
		return nil
	})
}
