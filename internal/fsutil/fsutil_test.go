package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, v := range []string{"one", "two"} {
		if err := WriteFileAtomic(p, []byte(v)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != v {
			t.Fatalf("read %q %v, want %q", b, err, v)
		}
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".f.tmp*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "new", "f"), []byte("x")); err != nil {
		t.Errorf("into a new directory: %v", err)
	}
	if st, err := os.Stat(filepath.Join(dir, "new")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("new directory: %v %v", st, err)
	}
}
