package tokens_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/tokens"
)

func TestNewKeySet(t *testing.T) {
	a, err := tokens.NewKeySet()
	if err != nil {
		t.Fatal(err)
	}
	b, err := tokens.NewKeySet()
	if err != nil {
		t.Fatal(err)
	}
	kidA, keyA := a.Active()
	kidB, keyB := b.Active()
	if len(keyA) != 32 || kidA == "" {
		t.Fatalf("Active = %q, %d bytes", kidA, len(keyA))
	}
	if kidA == kidB || bytes.Equal(keyA, keyB) {
		t.Fatal("two key sets share a kid or key")
	}
	if got, ok := a.Key(kidA); !ok || !bytes.Equal(got, keyA) {
		t.Fatal("Key(active) differs from Active")
	}
	if _, ok := a.Key(kidB); ok {
		t.Fatal("Key found a kid of another set")
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "keys")
	path := filepath.Join(dir, "purchase.json")
	created, err := tokens.LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode %o, want %o", p, got, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only the key file", len(entries))
	}

	loaded, err := tokens.LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kid1, key1 := created.Active()
	kid2, key2 := loaded.Active()
	if kid1 != kid2 || !bytes.Equal(key1, key2) {
		t.Fatal("second LoadOrCreateKeyFile did not load the first key")
	}
}

func TestLoadOrCreateKeepsInvalidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.LoadOrCreateKeyFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want an error naming %s", err, path)
	}
	if data, _ := os.ReadFile(path); string(data) != "{}" {
		t.Fatalf("invalid key file was overwritten: %s", data)
	}
}

func TestSaveReplacesMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := tokens.NewKeySet()
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode %o, want 600", got)
	}
	if _, err := tokens.LoadKeyFile(path); err != nil {
		t.Fatal(err)
	}
}

func TestLoadKeyFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.json")
	_, err := tokens.LoadKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want not-exist naming %s", err, path)
	}
}

func TestLoadKeyFileInvalid(t *testing.T) {
	k32 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	k64 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 64))
	k31 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 31))
	tests := []struct {
		name string
		data string
		want string // "" means valid
	}{
		{"valid", `{"active":"a","keys":{"a":"` + k32 + `"}}`, ""},
		{"valid long key and spare", `{"active":"a-1_B","keys":{"a-1_B":"` + k64 + `","old":"` + k32 + `"}}`, ""},
		{"not json", `active=a`, "decode"},
		{"empty", ``, "decode"},
		{"unknown field", `{"active":"a","keys":{"a":"` + k32 + `"},"extra":1}`, "unknown field"},
		{"no keys", `{"active":"a","keys":{}}`, "no keys"},
		{"no active", `{"keys":{"a":"` + k32 + `"}}`, "no active key id"},
		{"active not in keys", `{"active":"b","keys":{"a":"` + k32 + `"}}`, `active key id "b" is not among the keys`},
		{"short key", `{"active":"a","keys":{"a":"` + k31 + `"}}`, "31 bytes, want at least 32"},
		{"bad base64", `{"active":"a","keys":{"a":"!!!"}}`, "not standard base64"},
		{"url base64", `{"active":"a","keys":{"a":"` + strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32))) + `"}}`, "not standard base64"},
		{"empty kid", `{"active":"","keys":{"":"` + k32 + `"}}`, "want 1 to 64 characters"},
		{"long kid", `{"active":"a","keys":{"` + strings.Repeat("a", 65) + `":"` + k32 + `"}}`, "want 1 to 64 characters"},
		{"bad kid char", `{"active":"a.b","keys":{"a.b":"` + k32 + `"}}`, "only A-Z a-z 0-9 _ - allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.json")
			if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := tokens.LoadKeyFile(path)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("loaded, want error")
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, tt.want) {
				t.Fatalf("err = %q, want it to name %s and say %q", msg, path, tt.want)
			}
		})
	}
}
