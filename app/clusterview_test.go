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
	// Each has heard the other (a heartbeat every 2 s).
	for _, p := range []*app.App{a, b} {
		waitFor(t, 10*time.Second, func() error {
			v, err := p.Cluster(context.Background())
			if err != nil || len(v.Nodes) != 2 {
				return fmt.Errorf("cluster: %+v %v", v, err)
			}
			return nil
		})
	}
	c := newClient(t, a)
	for i := range 6 {
		sale := fmt.Sprint("s", i)
		c.createSale(a.AdminToken, map[string]any{"id": sale, "stock": 5})
		// One sale after the other: each placed before the next comes.
		waitFor(t, 10*time.Second, func() error {
			v, err := a.Cluster(context.Background())
			if err != nil {
				return err
			}
			for _, l := range v.Leases {
				if l.Sale == sale {
					return nil
				}
			}
			return fmt.Errorf("%s has no writer yet", sale)
		})
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
