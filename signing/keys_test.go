package signing_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/signing"
)

// Secrets of the right size; each appears in no error message.
var (
	secretA = strings.Repeat("a1", 16)                                           // 32 bytes, the minimum
	secretB = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" // openssl rand -hex 32
	secretC = "with inner  spaces and = signs, 32+ bytes long"
)

func TestParseKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		want signing.Keys
	}{
		{"one", "app-ios-1 " + secretA, signing.Keys{"app-ios-1": []byte(secretA)}},
		{"one with newline", "app-ios-1 " + secretA + "\n", signing.Keys{"app-ios-1": []byte(secretA)}},
		{"several, comments, blanks",
			"# flashgate app keys\n\n" +
				"app-ios-1 " + secretA + "\n" +
				"   # indented comment\n" +
				"\t\n" +
				"app_android-2    " + secretB + "\n" +
				"#app-old " + secretC + "\n",
			signing.Keys{"app-ios-1": []byte(secretA), "app_android-2": []byte(secretB)}},
		{"CRLF", "a " + secretA + "\r\nb " + secretB + "\r\n", signing.Keys{"a": []byte(secretA), "b": []byte(secretB)}},
		{"surrounding blanks trimmed", "  k \t " + secretB + " \t ", signing.Keys{"k": []byte(secretB)}},
		{"tab separator", "k\t" + secretB, signing.Keys{"k": []byte(secretB)}},
		{"secret keeps inner spaces", "k " + secretC, signing.Keys{"k": []byte(secretC)}},
		{"id 64 characters", strings.Repeat("K", 64) + " " + secretA, signing.Keys{strings.Repeat("K", 64): []byte(secretA)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := signing.ParseKeys([]byte(tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseKeysErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"empty", "", "no keys"},
		{"only comments and blanks", "# nothing yet\n\n   \n", "no keys"},
		{"no secret", "# keys\napp-ios-1\n", "line 2: "},
		{"no separator, secret glued on", "app-ios-1:" + secretB, "line 1: "},
		{"id with dot", "app.ios " + secretA, "line 1: key id"},
		{"id with colon", "\n\napp:ios " + secretA, "line 3: key id"},
		{"id too long", strings.Repeat("K", 65) + " " + secretA, "line 1: key id"},
		{"id non-ASCII", "appé " + secretA, "line 1: key id"},
		{"short secret", "a " + secretA + "\nb " + secretA[:31], "line 2: secret shorter than 32 bytes"},
		{"short after trimming", "a " + secretA[:30] + "  \t ", "line 1: secret shorter"},
		{"written the wrong way round", secretB + " app-ios-1", "line 1: secret shorter"},
		{"duplicate id", "a " + secretA + "\n# c\nb " + secretB + "\na " + secretC, "line 4: key id already on line 1"},
		{"duplicate id, same secret", "a " + secretA + "\na " + secretA, "line 2: key id already on line 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := signing.ParseKeys([]byte(tc.file))
			if err == nil {
				t.Fatalf("ParseKeys = %q, want an error", k)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
			for _, s := range []string{secretA, secretA[:30], secretB, secretC, "app-ios-1"} {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("error %q shows %q", err, s)
				}
			}
		})
	}
}

func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "signing-keys")
	if err := os.WriteFile(path, []byte("app-ios-1 "+secretB+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := signing.LoadKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(k, signing.Keys{"app-ios-1": []byte(secretB)}) {
		t.Fatalf("LoadKeys = %q", k)
	}

	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := signing.LoadKeys(empty); err == nil || !strings.Contains(err.Error(), empty) || !strings.Contains(err.Error(), "no keys") {
		t.Fatalf("LoadKeys(empty file) = %v, want an error naming the file", err)
	}

	if _, err := signing.LoadKeys(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadKeys(missing) = %v, want fs.ErrNotExist", err)
	}
}
