package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flashgate/flashgate/app"
)

const clusterUsage = `Usage:
  flashgate cluster status [--json]
Shows the flashgate processes on this NATS installation (as the process at
--url hears their heartbeats): where each serves, how far its projections
are behind the stream, which sales it writes for; and every sale's writer
lease, with its owner and how long ago it was renewed.
Common flags: --url (default http://127.0.0.1:8080), --admin-token (default: the
data directory's admin-token file, see --data).
`

func clusterCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "status" {
		fmt.Fprint(stderr, clusterUsage)
		return errUsage
	}
	fs := newFlags("cluster status", stderr)
	base := fs.String("url", "http://127.0.0.1:8080", "base URL of any flashgate process's HTTP API")
	token := fs.String("admin-token", "", "admin token (default: read from the data directory)")
	data := fs.String("data", "data", "data directory to read the admin token from")
	asJSON := fs.Bool("json", false, "print the JSON the admin API answers")
	if err := parse(fs, args[1:], getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("cluster status takes no arguments, got %q", fs.Arg(0))
	}
	if err := adminToken(token, *data); err != nil {
		return err
	}
	var raw bytes.Buffer
	if err := adminCall(ctx, *base, *token, http.MethodGet, "/api/v1/admin/cluster", nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(raw.Bytes())
		return err
	}
	var v app.ClusterView
	if err := json.Unmarshal(raw.Bytes(), &v); err != nil {
		return fmt.Errorf("cluster status: %w", err)
	}
	writeCluster(stdout, v)
	return nil
}

func writeCluster(w io.Writer, v app.ClusterView) {
	fmt.Fprintf(w, "%d processes, %d sale leases; stream at sequence %d", len(v.Nodes), len(v.Leases), v.LastSeq)
	if v.Degraded {
		fmt.Fprint(w, " (the answering process cannot write its heartbeat: this view may be stale)")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESS\tHTTP\tUP\tHEARD\tVIEWS BEHIND\tWRITES FOR")
	for _, n := range v.Nodes {
		owns := strings.Join(n.Owns, ",")
		if owns == "" {
			owns = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%d\t%s\n", n.Node, orDash(n.HTTP), v.At.Sub(n.Started).Round(time.Second),
			(time.Duration(n.BeatAgeMs) * time.Millisecond).Round(100*time.Millisecond), n.LagMessage, owns)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SALE\tOWNER\tRENEWED\tTTL")
	for _, l := range v.Leases {
		fmt.Fprintf(tw, "%s\t%s\t%s ago\t%s\n", l.Sale, l.Owner, (time.Duration(l.RenewedMs) * time.Millisecond).Round(100*time.Millisecond),
			time.Duration(l.TTLms)*time.Millisecond)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
