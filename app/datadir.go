package app

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/flashgate/flashgate/internal/fsutil"
	"github.com/oklog/ulid/v2"
)

// DataDir is an installation's directory: the embedded JetStream store, the
// signing keys, the admin token, the node id and the SQLite projections.
type DataDir string

// Paths inside the data directory.
func (d DataDir) NATS() string { return filepath.Join(string(d), "nats") }
func (d DataDir) PurchaseKeys() string {
	return filepath.Join(string(d), "keys", "purchase-tokens.json")
}
func (d DataDir) SessionKeys() string { return filepath.Join(string(d), "keys", "sessions.json") }
func (d DataDir) AdminToken() string  { return filepath.Join(string(d), "admin-token") }
func (d DataDir) NodeID() string      { return filepath.Join(string(d), "node-id") }
func (d DataDir) Projections() string { return filepath.Join(string(d), "projections.db") }
func (d DataDir) lockFile() string    { return filepath.Join(string(d), "flashgate.lock") }

// ErrLocked means another flashgate process uses the data directory.
var ErrLocked = errors.New("data directory is in use by another flashgate process")

// Lock takes the data directory for this process (an advisory flock that
// the kernel drops when the process dies, kill -9 included). Unlock with
// the returned function.
func (d DataDir) Lock() (unlock func(), err error) {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	f, err := os.OpenFile(d.lockFile(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s", ErrLocked, d)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// readOrCreate returns the trimmed content of path, writing make()'s value
// there first (mode 0600, atomically) when the file does not exist.
func readOrCreate(path string, make func() string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%s is empty", path)
		}
		return v, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	v := make()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	if err := fsutil.WriteFileAtomic(path, []byte(v+"\n")); err != nil {
		return "", err
	}
	return v, nil
}

// NodeIDValue returns the installation's stable node id.
func (d DataDir) NodeIDValue() (string, error) {
	return readOrCreate(d.NodeID(), func() string { return "node-" + ulid.Make().String() })
}

// AdminTokenValue returns the installation's admin token, generated on first use.
func (d DataDir) AdminTokenValue() (string, error) {
	return readOrCreate(d.AdminToken(), func() string {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		return "fga_" + hex.EncodeToString(b)
	})
}
