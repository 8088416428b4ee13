package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/audit"
	"github.com/flashgate/flashgate/embed"
)

// TestBackupRestoreInstallation backs up an installation with real traffic,
// running (through its NATS listener) and stopped (its data directory),
// restores each into a fresh data directory, and checks that the restored
// installation is the same one: the audit passes with the same figures, and
// a session and purchase tokens issued before keep working.
func TestBackupRestoreInstallation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	orig := filepath.Join(tmp, "orig")

	a := bkStartApp(t, app.Config{Data: orig, NATSListen: "127.0.0.1:0"})
	admin := a.AdminToken
	if r := bkDo(t, "POST", a.URL+"/api/v1/admin/sales", admin, nil, map[string]any{"id": "gig", "stock": 4}); r.status != http.StatusCreated {
		t.Fatalf("create sale: %d %s", r.status, r.raw)
	}
	type shopper struct{ session, token, order string }
	var shoppers []*shopper
	for range 7 { // quota 5: two are refused
		r := bkDo(t, "POST", a.URL+"/api/v1/session", "", nil, nil)
		s := &shopper{session: r.str("session")}
		r = bkDo(t, "POST", a.URL+"/api/v1/sales/gig/tokens", s.session, nil, nil)
		s.token = r.str("token")
		shoppers = append(shoppers, s)
	}
	for _, s := range shoppers[:3] {
		r := bkDo(t, "POST", a.URL+"/api/v1/sales/gig/purchases", s.session, map[string]string{"X-Purchase-Token": s.token}, nil)
		if r.status != http.StatusAccepted {
			t.Fatalf("purchase: %d %s", r.status, r.raw)
		}
		s.order = r.str("orderId")
	}
	// The orders go to the in-process fake provider; their outcomes are
	// events too. Wait for them: the backups below must see one history.
	for _, s := range shoppers[:3] {
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := bkDo(t, "GET", a.URL+"/api/v1/orders/"+s.order, s.session, nil, nil)
			if r.status == http.StatusOK && r.str("status") == "confirmed" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("order %s not confirmed: %d %s", s.order, r.status, r.raw)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	holder := shoppers[3] // holds a token, has not bought yet
	if holder.token == "" {
		t.Fatal("the fourth shopper got no token")
	}

	// A backup of the running installation, and its audit.
	live := filepath.Join(tmp, "live.backup")
	out := bkRun(t, ctx, 0, "backup", "--nats-url", a.NATSPublic, "--data", orig, "--out", live)
	if strings.Contains(out, a.NATSPublic) {
		t.Errorf("the NATS password is in the output:\n%s", out)
	}
	liveAudit := bkAudit(t, ctx, "", a.NATSPublic)
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}

	// A backup of the stopped installation, and its audit.
	stopped := filepath.Join(tmp, "stopped.backup")
	start := time.Now()
	bkRun(t, ctx, 0, "backup", "--data", orig, "--out", stopped)
	backupTook := time.Since(start)
	origAudit := bkAudit(t, ctx, orig, "")
	if bkFigures(liveAudit) != bkFigures(origAudit) {
		t.Fatalf("live audit %s, stopped audit %s", bkFigures(liveAudit), bkFigures(origAudit))
	}
	if fi, err := os.Stat(stopped); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi.Mode(), err)
	}
	bkRun(t, ctx, 0, "restore", "--in", stopped, "--check")

	for _, file := range []string{live, stopped} {
		restored := filepath.Join(tmp, "restored-"+filepath.Base(file))
		start := time.Now()
		bkRun(t, ctx, 0, "restore", "--in", file, "--data", restored)
		restoreTook := time.Since(start)
		got := bkAudit(t, ctx, restored, "")
		if bkFigures(got) != bkFigures(origAudit) {
			t.Fatalf("%s: restored audit %s, original %s", file, bkFigures(got), bkFigures(origAudit))
		}
		for _, f := range []string{"keys/purchase-tokens.json", "keys/sessions.json", "admin-token", "node-id", "nats-password"} {
			want, _ := os.ReadFile(filepath.Join(orig, f))
			p := filepath.Join(restored, f)
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: %v (equal: %v)", p, err, bytes.Equal(got, want))
			}
			if fi, err := os.Stat(p); err == nil && fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v", p, fi.Mode())
			}
		}
		if fi, err := os.Stat(file); err == nil {
			t.Logf("%s: %d bytes; restore took %v (the stopped backup took %v); audit: %s", filepath.Base(file), fi.Size(), restoreTook, backupTook, bkFigures(got))
		}
	}

	// The restored installation serves the tokens and sessions of before.
	b := bkStartApp(t, app.Config{Data: filepath.Join(tmp, "restored-stopped.backup")})
	if b.AdminToken != admin {
		t.Errorf("admin token changed")
	}
	r := bkDo(t, "POST", b.URL+"/api/v1/sales/gig/tokens", holder.session, nil, nil)
	if r.status != http.StatusOK || r.str("status") != "already_issued" || r.str("token") != holder.token {
		t.Fatalf("token again after restore: %d %s", r.status, r.raw)
	}
	r = bkDo(t, "POST", b.URL+"/api/v1/sales/gig/purchases", holder.session, map[string]string{"X-Purchase-Token": holder.token}, nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("purchase with a token of before: %d %s", r.status, r.raw)
	}
	first := shoppers[0]
	r = bkDo(t, "POST", b.URL+"/api/v1/sales/gig/purchases", first.session, map[string]string{"X-Purchase-Token": first.token}, nil)
	if r.status != http.StatusConflict || r.str("error") != "token_used" || r.str("orderId") != first.order {
		t.Fatalf("second purchase with a used token: %d %s", r.status, r.raw)
	}
	if r := bkDo(t, "GET", b.URL+"/api/v1/admin/sales/gig", admin, nil, nil); r.status != http.StatusOK {
		t.Fatalf("admin call with the old admin token: %d %s", r.status, r.raw)
	}
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}

	t.Run("RestoreIntoExternalNATS", func(t *testing.T) {
		ns, err := embed.Start(embed.Options{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Shutdown()
		keys := filepath.Join(tmp, "external-keys")
		bkRun(t, ctx, 0, "restore", "--in", stopped, "--nats-url", ns.ClientURL(), "--data", keys)
		if got := bkAudit(t, ctx, "", ns.ClientURL()); bkFigures(got) != bkFigures(origAudit) {
			t.Fatalf("audit %s, original %s", bkFigures(got), bkFigures(origAudit))
		}
		errOut := bkRun(t, ctx, 1, "restore", "--in", stopped, "--nats-url", ns.ClientURL(), "--no-keys")
		if !strings.Contains(errOut, "already has a flashgate installation") {
			t.Errorf("second restore: %s", errOut)
		}
		c := bkStartApp(t, app.Config{Data: keys, NATSURL: ns.ClientURL()})
		r := bkDo(t, "POST", c.URL+"/api/v1/sales/gig/purchases", first.session, map[string]string{"X-Purchase-Token": first.token}, nil)
		if r.status != http.StatusConflict || r.str("orderId") != first.order {
			t.Fatalf("purchase with a used token: %d %s", r.status, r.raw)
		}
		if err := c.Shutdown(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("RestoreRefusesNonEmptyTarget", func(t *testing.T) {
		target := filepath.Join(tmp, "restored-stopped.backup") // an installation now
		errOut := bkRun(t, ctx, 1, "restore", "--in", stopped, "--data", target)
		if !strings.Contains(errOut, "not empty") {
			t.Errorf("stderr: %s", errOut)
		}
		other := filepath.Join(tmp, "stray")
		os.MkdirAll(other, 0o700)
		os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o600)
		bkRun(t, ctx, 1, "restore", "--in", stopped, "--data", other)
		if b, err := os.ReadFile(filepath.Join(other, "notes.txt")); err != nil || string(b) != "mine" {
			t.Errorf("the stray file was touched: %q %v", b, err)
		}
	})

	t.Run("RestoreRefusesDamagedArchive", func(t *testing.T) {
		whole, err := os.ReadFile(stopped)
		if err != nil {
			t.Fatal(err)
		}
		damaged := filepath.Join(tmp, "damaged.backup")
		for name, b := range map[string][]byte{
			"truncated": whole[:len(whole)*2/3],
			"flipped":   bkFlip(whole, bkMemberAt(t, whole, "streams/FLASHGATE.snapshot")+100),
		} {
			if err := os.WriteFile(damaged, b, 0o600); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(tmp, "from-damaged")
			errOut := bkRun(t, ctx, 1, "restore", "--in", damaged, "--data", target)
			if !strings.Contains(errOut, "not an intact flashgate backup") {
				t.Errorf("%s: stderr: %s", name, errOut)
			}
			if _, err := os.Stat(target); !os.IsNotExist(err) {
				t.Errorf("%s: %s exists after a failed restore (%v)", name, target, err)
			}
			bkRun(t, ctx, 1, "restore", "--in", damaged, "--check")
		}
		// No staging directory left behind.
		entries, _ := os.ReadDir(tmp)
		for _, e := range entries {
			if strings.Contains(e.Name(), ".restore-") || strings.Contains(e.Name(), ".tmp-") {
				t.Errorf("left behind: %s", e.Name())
			}
		}
	})

	t.Run("BackupNeedsKeys", func(t *testing.T) {
		errOut := bkRun(t, ctx, 1, "backup", "--data", filepath.Join(tmp, "restored-live.backup"), "--out", filepath.Join(tmp, "x.backup"), "--token-key-file", filepath.Join(tmp, "nowhere.json"))
		if !strings.Contains(errOut, "no signing keys") || !strings.Contains(errOut, "--no-keys") {
			t.Errorf("stderr: %s", errOut)
		}
		errOut = bkRun(t, ctx, 2, "backup", "--nats-url", "nats://127.0.0.1:1", "--out", filepath.Join(tmp, "x.backup"))
		if !strings.Contains(errOut, "--data") {
			t.Errorf("stderr: %s", errOut)
		}
		// A backup without keys restores only with --no-keys.
		nokeys := filepath.Join(tmp, "nokeys.backup")
		bkRun(t, ctx, 0, "backup", "--data", filepath.Join(tmp, "restored-live.backup"), "--out", nokeys, "--no-keys")
		errOut = bkRun(t, ctx, 1, "restore", "--in", nokeys, "--data", filepath.Join(tmp, "nokeys"))
		if !strings.Contains(errOut, "no signing keys") {
			t.Errorf("stderr: %s", errOut)
		}
		bkRun(t, ctx, 0, "restore", "--in", nokeys, "--data", filepath.Join(tmp, "nokeys"), "--no-keys")
	})
}

func bkStartApp(t *testing.T, c app.Config) *app.App {
	t.Helper()
	c.HTTP = "127.0.0.1:0"
	c.SessionRate = -1
	c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := app.Start(ctx, c)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })
	return a
}

// bkRun runs the flashgate command line with an empty environment, checks
// its exit code and returns what it wrote (stdout and stderr).
func bkRun(t *testing.T, ctx context.Context, code int, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	got := run(ctx, args, func(string) string { return "" }, &stdout, &stderr)
	out := stdout.String() + stderr.String()
	if got != code {
		t.Fatalf("flashgate %s: exit %d, want %d\n%s", strings.Join(args, " "), got, code, out)
	}
	t.Logf("flashgate %s:\n%s", args[0], out)
	return out
}

func bkAudit(t *testing.T, ctx context.Context, data, natsURL string) *audit.Report {
	t.Helper()
	rep, err := runAudit(ctx, data, natsURL, "", "")
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	if !rep.OK() {
		var out bytes.Buffer
		rep.Write(&out)
		t.Fatalf("audit failed:\n%s", out.String())
	}
	return rep
}

// bkFigures are an audit's figures that a restore must keep.
func bkFigures(r *audit.Report) string {
	s := fmt.Sprintf("last seq %d, %d messages", r.LastSeq, r.Messages)
	for _, sr := range r.Sales {
		s += fmt.Sprintf("; %s: %d requests, %d batches, issued %d, expired %d, redeemed %d, %d/%d decisions reproduced",
			sr.Sale.ID, sr.Requests, sr.Batches, sr.Issued, sr.Expired, sr.Redeemed, sr.Reproduced, sr.Decisions)
	}
	return s
}

// bkMemberAt is where the data of an archive member begins.
func bkMemberAt(t *testing.T, archive []byte, member string) int {
	t.Helper()
	rd := bytes.NewReader(archive)
	for tr := tar.NewReader(rd); ; {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no member %s: %v", member, err)
		}
		if h.Name == member {
			return len(archive) - rd.Len()
		}
	}
}

func bkFlip(b []byte, at int) []byte {
	c := bytes.Clone(b)
	c[at] ^= 0x55
	return c
}

type bkReply struct {
	status int
	body   map[string]any
	raw    string
}

func (r bkReply) str(k string) string { s, _ := r.body[k].(string); return s }

func bkDo(t *testing.T, method, url, bearer string, hdr map[string]string, body any) bkReply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := bkReply{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}
