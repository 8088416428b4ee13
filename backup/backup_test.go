package backup_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flashgate/flashgate/backup"
	"github.com/flashgate/flashgate/embed"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// server starts an embedded server with its store in a temporary directory
// and connects to it.
func server(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns, err := embed.Start(embed.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// installation lays out flashgate's stream and bucket and appends n
// messages of various sizes, then deletes some (a gap in the middle and the
// last message), so that only exact sequence preservation passes.
func installation(t testing.TB, js jetstream.JetStream, n int) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	if err := stream.Ensure(ctx, js, stream.Config{}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		subj := events.RequestSubject(fmt.Sprintf("s%d", i%3))
		data := make([]byte, 50+i%700) // random: the snapshot spans several chunks
		for j := range data {
			data[j] = byte(rnd.Uint32())
		}
		if _, err := js.Publish(ctx, subj, data, jetstream.WithMsgID(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{5, 6, 7, uint64(n)} {
		if err := st.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.KeyValue(ctx, events.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "s1", []byte("node-A")); err != nil {
		t.Fatal(err)
	}
}

var testFiles = []backup.File{
	{Name: backup.PurchaseKeysFile, Data: []byte(`{"active":"k1","keys":{"k1":"c2VjcmV0"}}` + "\n")},
	{Name: backup.AdminTokenFile, Data: []byte("fga_0123\n")},
}

func write(t testing.TB, nc *nats.Conn) ([]byte, *backup.Manifest) {
	t.Helper()
	var buf bytes.Buffer
	m, err := backup.Write(context.Background(), nc, &buf, backup.Options{Files: testFiles, Source: "test", TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	return buf.Bytes(), m
}

func TestBackupRestoreKeepsSequences(t *testing.T) {
	ctx := context.Background()
	nc, js := server(t)
	installation(t, js, 300)
	src, _ := js.Stream(ctx, events.StreamName)
	want, _ := src.Info(ctx)

	archive, m := write(t, nc)
	if got := m.Streams[0].State; got.Msgs != want.State.Msgs || got.LastSeq != want.State.LastSeq || got.FirstSeq != 1 {
		t.Fatalf("manifest state %+v, stream %+v", got, want.State)
	}
	if m.Streams[0].Format != backup.SnapshotNATSArchive {
		t.Errorf("snapshot format %q", m.Streams[0].Format)
	}

	nc2, js2 := server(t)
	res, err := backup.Restore(ctx, nc2, bytes.NewReader(archive), backup.RestoreOptions{})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if len(res.Files) != 2 || !bytes.Equal(res.Files[0].Data, testFiles[0].Data) || !bytes.Equal(res.Files[1].Data, testFiles[1].Data) {
		t.Errorf("files %+v", res.Files)
	}
	dst, err := js2.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := dst.Info(ctx)
	if got.State.Msgs != want.State.Msgs || got.State.FirstSeq != want.State.FirstSeq || got.State.LastSeq != want.State.LastSeq || got.State.Bytes != want.State.Bytes {
		t.Fatalf("restored state %+v, want %+v", got.State, want.State)
	}
	// Every message at its own sequence, with its subject, data and time.
	for seq := uint64(1); seq <= want.State.LastSeq; seq++ {
		a, aerr := src.GetMsg(ctx, seq)
		b, berr := dst.GetMsg(ctx, seq)
		if (aerr == nil) != (berr == nil) {
			t.Fatalf("seq %d: source %v, restored %v", seq, aerr, berr)
		}
		if aerr != nil {
			continue
		}
		if a.Subject != b.Subject || !bytes.Equal(a.Data, b.Data) || !a.Time.Equal(b.Time) || a.Header.Get(jetstream.MsgIDHeader) != b.Header.Get(jetstream.MsgIDHeader) {
			t.Fatalf("seq %d differs", seq)
		}
	}
	// The next append continues the sequence.
	ack, err := js2.Publish(ctx, events.RequestSubject("s1"), []byte("next"))
	if err != nil || ack.Sequence != want.State.LastSeq+1 {
		t.Fatalf("next append: %+v %v", ack, err)
	}
	// The lease bucket is back, empty, with its configuration.
	kv, err := js2.KeyValue(ctx, events.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "s1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("lease after restore: %v", err)
	}
	if st, _ := kv.Status(ctx); st.TTL() != stream.DefaultLeaseTTL || st.History() != 1 {
		t.Errorf("lease bucket ttl %v history %d", st.TTL(), st.History())
	}

	// Restoring again over it is refused, and changes nothing.
	_, err = backup.Restore(ctx, nc2, bytes.NewReader(archive), backup.RestoreOptions{})
	if !errors.Is(err, backup.ErrExists) {
		t.Fatalf("restore over an installation: %v", err)
	}
	if info, _ := dst.Info(ctx); info.State.LastSeq != want.State.LastSeq+1 {
		t.Errorf("state after the refused restore %+v", info.State)
	}
}

func TestBackupOfEmptyStream(t *testing.T) {
	ctx := context.Background()
	nc, js := server(t)
	if err := stream.Ensure(ctx, js, stream.Config{}); err != nil {
		t.Fatal(err)
	}
	archive, m := write(t, nc)
	if m.Streams[0].State.Msgs != 0 {
		t.Fatalf("manifest %+v", m.Streams[0].State)
	}
	nc2, _ := server(t)
	if _, err := backup.Restore(ctx, nc2, bytes.NewReader(archive), backup.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestBackupWithoutInstallation(t *testing.T) {
	nc, _ := server(t)
	_, err := backup.Write(context.Background(), nc, io.Discard, backup.Options{TempDir: t.TempDir()})
	if err == nil {
		t.Fatal("backup of a server without flashgate's stream succeeded")
	}
	t.Log(err)
}

// TestRestoreRefusesDamage: a truncated or altered archive restores nothing,
// names the damage, and leaves no stream behind.
func TestRestoreRefusesDamage(t *testing.T) {
	ctx := context.Background()
	nc, js := server(t)
	installation(t, js, 2000)
	archive, m := write(t, nc)
	// Where the members' data begin.
	offsets := map[string]int{}
	rd := bytes.NewReader(archive)
	for tr := tar.NewReader(rd); ; {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		offsets[h.Name] = len(archive) - rd.Len()
	}
	snapAt, keysAt := offsets[m.Streams[0].Member], offsets["data/"+backup.PurchaseKeysFile]
	lastAt := 0 // where the last member's data begin (its header is the 512 bytes before)
	for _, at := range offsets {
		lastAt = max(lastAt, at)
	}
	if snapAt == 0 || keysAt == 0 || m.Streams[0].Size < 3*128<<10 {
		t.Fatalf("offsets %v, snapshot %d bytes", offsets, m.Streams[0].Size)
	}
	flip := func(at int) []byte {
		b := bytes.Clone(archive)
		b[at] ^= 0x55
		return b
	}
	cases := map[string][]byte{
		"empty":                 {},
		"not a backup":          []byte("hello, this is not a tar file at all, just some text long enough to matter"),
		"truncated manifest":    archive[:300],
		"truncated in a key":    archive[:keysAt+10],
		"truncated in snapshot": archive[:snapAt+300<<10],
		// The last member: cut inside its header, and cut exactly before it
		// (the tar reader then sees a clean end; the manifest must notice).
		"truncated in the last header": archive[:lastAt-100],
		"last member missing":          archive[:lastAt-512],
		"flipped in a key":             flip(keysAt + 5),
		"flipped in snapshot":          flip(snapAt + 1000),
		"flipped near its end":         flip(snapAt + int(m.Streams[0].Size) - 10),
		"flipped in the manifest":      flip(offsets["manifest.json"] + 40),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			nc2, js2 := server(t)
			_, err := backup.Restore(ctx, nc2, bytes.NewReader(b), backup.RestoreOptions{})
			if !errors.Is(err, backup.ErrCorrupt) {
				t.Fatalf("restore: %v, want ErrCorrupt", err)
			}
			t.Log(err)
			if _, err := backup.Verify(bytes.NewReader(b)); !errors.Is(err, backup.ErrCorrupt) {
				t.Errorf("verify: %v, want ErrCorrupt", err)
			}
			names := js2.StreamNames(ctx)
			for n := range names.Name() {
				t.Errorf("stream %s left behind", n)
			}
		})
	}
	if _, err := backup.Verify(bytes.NewReader(archive)); err != nil {
		t.Fatalf("verify of the intact archive: %v", err)
	}
}

// TestRestoreRefusesUnknownMember: a member outside the manifest (a path a
// restore could be tricked into writing) is refused.
func TestRestoreRefusesUnknownMember(t *testing.T) {
	nc, js := server(t)
	installation(t, js, 10)
	archive, _ := write(t, nc)
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	tr := tar.NewReader(bytes.NewReader(archive))
	for i := 0; ; i++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			evil := []byte("x")
			tw.WriteHeader(&tar.Header{Name: "data/../../evil", Size: 1, Mode: 0o600, Typeflag: tar.TypeReg})
			tw.Write(evil)
		}
		tw.WriteHeader(h)
		io.Copy(tw, tr)
	}
	tw.Close()
	if _, err := backup.Verify(bytes.NewReader(out.Bytes())); !errors.Is(err, backup.ErrCorrupt) {
		t.Fatalf("verify: %v", err)
	}
}

func TestBackupDataFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if err := backup.WriteDataFiles(dir, testFiles); err != nil {
		t.Fatal(err)
	}
	for _, f := range testFiles {
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", p, fi.Mode())
		}
	}
	if err := backup.WriteDataFiles(dir, []backup.File{{Name: "../x", Data: []byte("x")}}); err == nil {
		t.Error("wrote a file outside the known ones")
	}
	// ReadDataFiles reads them back; the purchase keys are required.
	if _, err := backup.ReadDataFiles(t.TempDir(), "", ""); !errors.Is(err, backup.ErrNoKeys) {
		t.Errorf("read from an empty directory: %v", err)
	}
}

func TestRestoreReplicas(t *testing.T) {
	// On a single server only R1 is possible: asking for 3 must fail
	// cleanly, leaving nothing behind.
	ctx := context.Background()
	nc, js := server(t)
	installation(t, js, 20)
	archive, _ := write(t, nc)
	nc2, js2 := server(t)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := backup.Restore(ctx, nc2, bytes.NewReader(archive), backup.RestoreOptions{Replicas: 3})
	if err == nil {
		t.Fatal("restore with 3 replicas on one server succeeded")
	}
	t.Log(err)
	for n := range js2.StreamNames(ctx).Name() {
		t.Errorf("stream %s left behind", n)
	}
}

// TestRestoreOntoCluster: a single server's backup restored onto a cluster
// of three with three replicas, then backed up from the cluster again.
func TestRestoreOntoCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, js := server(t)
	installation(t, js, 500)
	archive, m := write(t, nc)

	c, err := embed.StartCluster(3, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	cc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	res, err := backup.Restore(ctx, cc, bytes.NewReader(archive), backup.RestoreOptions{Replicas: 3})
	if err != nil {
		t.Fatalf("restore onto the cluster: %v", err)
	}
	cjs, _ := jetstream.New(cc)
	st, err := cjs.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info(ctx)
	if info.Config.Replicas != 3 || info.State.LastSeq != m.Streams[0].State.LastSeq || info.State.Msgs != m.Streams[0].State.Msgs {
		t.Fatalf("on the cluster: replicas %d, state %+v; backup %+v", info.Config.Replicas, info.State, m.Streams[0].State)
	}
	t.Logf("restored onto 3 servers: %+v", res.Streams)
	// And back: a backup of the cluster restores onto a single server.
	again, m2 := write(t, cc)
	if m2.Streams[0].State.LastSeq != m.Streams[0].State.LastSeq {
		t.Fatalf("backup of the cluster: %+v", m2.Streams[0].State)
	}
	nc3, _ := server(t)
	if _, err := backup.Restore(ctx, nc3, bytes.NewReader(again), backup.RestoreOptions{Replicas: 1}); err != nil {
		t.Fatalf("restore of the cluster's backup: %v", err)
	}
}
