package tokens

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/flashgate/flashgate/internal/fsutil"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"

	"github.com/oklog/ulid/v2"
)

// keySize is the size in bytes of keys made by NewKeySet and Rotate, and the
// minimum size accepted from a key file.
const keySize = 32

// maxKidLen is the longest key id accepted from a key file.
const maxKidLen = 64

// KeySet is a set of HMAC-SHA256 keys by key id (kid). One key is active and
// signs; every key verifies. Make one with NewKeySet, LoadKeyFile or
// LoadOrCreateKeyFile. A KeySet is safe for concurrent use.
type KeySet struct {
	mu   sync.Mutex // serialises Rotate
	snap atomic.Pointer[keySnapshot]
}

// keySnapshot is immutable once published; Rotate publishes a new one.
type keySnapshot struct {
	active   string
	keys     map[string][]byte
	macs     map[string]*macKey // by kid
	byHeader map[string]*macKey // by the header segment of the key's tokens
}

// newSnapshot returns the key set's state with keys by kid, active signing.
func newSnapshot(active string, keys map[string][]byte) *keySnapshot {
	s := &keySnapshot{active: active, keys: keys, macs: make(map[string]*macKey, len(keys)), byHeader: make(map[string]*macKey, len(keys))}
	for kid, key := range keys {
		m := newMacKey(kid, key)
		s.macs[kid], s.byHeader[m.header] = m, m
	}
	return s
}

// keyFile is the JSON form of a KeySet on disk. Keys are standard base64.
type keyFile struct {
	Active string            `json:"active"`
	Keys   map[string]string `json:"keys"`
}

// NewKeySet returns a KeySet holding one fresh random key, which is active.
func NewKeySet() (*KeySet, error) {
	kid, key := newKey()
	k := &KeySet{}
	k.snap.Store(newSnapshot(kid, map[string][]byte{kid: key}))
	return k, nil
}

// newKey returns a new key id and keySize random bytes. Key ids are ULIDs, so
// they sort by creation time.
func newKey() (string, []byte) {
	key := make([]byte, keySize)
	rand.Read(key) // never fails; see crypto/rand.Read
	return ulid.Make().String(), key
}

// LoadOrCreateKeyFile loads the key file at path, or, if there is none,
// creates it with a fresh KeySet.
func LoadOrCreateKeyFile(path string) (*KeySet, error) {
	k, err := LoadKeyFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	k, err = NewKeySet()
	if err != nil {
		return nil, err
	}
	if err := k.Save(path); err != nil {
		return nil, err
	}
	return k, nil
}

// LoadKeyFile loads and validates the key file at path. A missing file is an
// error that matches fs.ErrNotExist.
func LoadKeyFile(path string) (*KeySet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load key file: %w", err)
	}
	snap, err := parseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	k := &KeySet{}
	k.snap.Store(snap)
	return k, nil
}

func parseKeyFile(data []byte) (*keySnapshot, error) {
	var f keyFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if len(f.Keys) == 0 {
		return nil, errors.New("no keys")
	}
	keys := make(map[string][]byte, len(f.Keys))
	for kid, enc := range f.Keys {
		if err := checkKid(kid); err != nil {
			return nil, err
		}
		key, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return nil, fmt.Errorf("key %q: not standard base64", kid)
		}
		if len(key) < keySize {
			return nil, fmt.Errorf("key %q: %d bytes, want at least %d", kid, len(key), keySize)
		}
		keys[kid] = key
	}
	if f.Active == "" {
		return nil, errors.New("no active key id")
	}
	if _, ok := keys[f.Active]; !ok {
		return nil, fmt.Errorf("active key id %q is not among the keys", f.Active)
	}
	return newSnapshot(f.Active, keys), nil
}

// checkKid reports whether kid is 1..64 characters of [A-Za-z0-9_-].
func checkKid(kid string) error {
	if kid == "" || len(kid) > maxKidLen {
		return fmt.Errorf("key id %q: want 1 to %d characters", kid, maxKidLen)
	}
	for i := 0; i < len(kid); i++ {
		c := kid[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("key id %q: only A-Z a-z 0-9 _ - allowed", kid)
		}
	}
	return nil
}

// Rotate adds a fresh random key and makes it active. Tokens signed with
// earlier keys still verify. Call Save to keep the new key.
func (k *KeySet) Rotate() (kid string, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	old := k.snap.Load()
	kid, key := newKey()
	keys := make(map[string][]byte, len(old.keys)+1)
	for id, v := range old.keys {
		keys[id] = v
	}
	keys[kid] = key
	k.snap.Store(newSnapshot(kid, keys))
	return kid, nil
}

// Save writes the key set to path atomically: a temporary file in the same
// directory is written, synced and renamed over path. The directory is created
// with mode 0700 if missing; the file has mode 0600.
func (k *KeySet) Save(path string) error {
	snap := k.snap.Load()
	f := keyFile{Active: snap.active, Keys: make(map[string]string, len(snap.keys))}
	for kid, key := range snap.keys {
		f.Keys[kid] = base64.StdEncoding.EncodeToString(key)
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("save key file %s: %w", path, err)
	}
	data = append(data, '\n')
	if err := fsutil.WriteFileAtomic(path, data); err != nil {
		return fmt.Errorf("save key file: %w", err)
	}
	return nil
}

// Active returns the id and bytes of the signing key. The bytes are shared and
// must not be modified.
func (k *KeySet) Active() (kid string, key []byte) {
	snap := k.snap.Load()
	return snap.active, snap.keys[snap.active]
}

// Others returns every key but the active one (the bytes are shared and
// must not be modified).
func (k *KeySet) Others() [][]byte {
	snap := k.snap.Load()
	var out [][]byte
	for kid, key := range snap.keys {
		if kid != snap.active {
			out = append(out, key)
		}
	}
	return out
}

// Key returns the key with id kid. The bytes are shared and must not be
// modified.
func (k *KeySet) Key(kid string) ([]byte, bool) {
	key, ok := k.snap.Load().keys[kid]
	return key, ok
}
