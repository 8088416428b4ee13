package backup

import (
	"errors"
	"fmt"
	"github.com/flashgate/flashgate/internal/fsutil"
	"io/fs"
	"os"
	"strings"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/tokens"
)

// ErrNoKeys is returned by ReadDataFiles when the purchase-token keys are
// not where it looks: a backup without them restores an installation whose
// tokens no longer verify.
var ErrNoKeys = errors.New("no signing keys")

// Names of the data directory's files a backup carries: their path in the
// data directory, and in the manifest.
const (
	PurchaseKeysFile = "keys/purchase-tokens.json"
	SessionKeysFile  = "keys/sessions.json"
	AdminTokenFile   = "admin-token"
	NodeIDFile       = "node-id"
	NATSPasswordFile = "nats-password"
)

var dataFiles = []struct {
	name string
	path func(app.DataDir) string
	key  bool // a key set: must parse
}{
	{PurchaseKeysFile, app.DataDir.PurchaseKeys, true},
	{SessionKeysFile, app.DataDir.SessionKeys, true},
	{AdminTokenFile, app.DataDir.AdminToken, false},
	{NodeIDFile, app.DataDir.NodeID, false},
	{NATSPasswordFile, app.DataDir.NATSPassword, false},
}

// ReadDataFiles reads the installation's secrets and identity from data
// directory dir: the purchase-token keys (required: ErrNoKeys), the session
// keys, the admin token, the node id and the embedded NATS listener's
// password, each when present (the session keys are absent in external
// identity mode, the admin token when it is always given with
// --admin-token, the password without --nats-listen). purchaseKeys and sessionKeys, when not empty,
// are the key files' paths instead (serve's --token-key-file and
// --session-key-file), and required. Key files must parse.
func ReadDataFiles(dir, purchaseKeys, sessionKeys string) ([]File, error) {
	d := app.DataDir(dir)
	given := map[string]string{PurchaseKeysFile: purchaseKeys, SessionKeysFile: sessionKeys}
	var files []File
	for _, df := range dataFiles {
		p, required := df.path(d), df.name == PurchaseKeysFile
		if g := given[df.name]; g != "" {
			p, required = g, true
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			if !required {
				continue
			}
			if df.name == PurchaseKeysFile {
				return nil, fmt.Errorf("%w: %s does not exist", ErrNoKeys, app.Abs(p))
			}
		}
		if err != nil {
			return nil, err
		}
		if df.key {
			if _, err := tokens.LoadKeyFile(p); err != nil {
				return nil, err
			}
		} else if strings.TrimSpace(string(b)) == "" {
			return nil, fmt.Errorf("%s is empty", app.Abs(p))
		}
		files = append(files, File{Name: df.name, Data: b})
	}
	return files, nil
}

// HasKeys reports whether a backup holds the purchase-token keys.
func (m *Manifest) HasKeys() bool { return m.file(PurchaseKeysFile) != nil }

// WriteDataFiles writes files into data directory dir where the service
// looks for them, each with mode 0600 and atomically (a temporary file
// synced and renamed), directories with mode 0700.
func WriteDataFiles(dir string, files []File) error {
	d := app.DataDir(dir)
	for _, f := range files {
		p := ""
		for _, df := range dataFiles {
			if df.name == f.Name {
				p = df.path(d)
			}
		}
		if p == "" {
			return fmt.Errorf("%q is not a data directory file a backup carries", f.Name)
		}
		if err := fsutil.WriteFileAtomic(p, f.Data); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// SyncDir fsyncs a directory, so that a rename in it is durable.
func SyncDir(dir string) error { return fsutil.SyncDir(dir) }
