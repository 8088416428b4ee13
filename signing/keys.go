package signing

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// minSecretLen is the shortest secret ParseKeys accepts, in bytes.
const minSecretLen = 32

// Keys maps key ids to secrets.
type Keys map[string][]byte

// LoadKeys reads the key file at path; see ParseKeys for its format. The file
// holds secrets and should be mode 0600; LoadKeys does not check.
func LoadKeys(path string) (Keys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load signing keys: %w", err)
	}
	k, err := ParseKeys(data)
	if err != nil {
		return nil, fmt.Errorf("signing keys %s: %w", path, err)
	}
	return k, nil
}

// ParseKeys parses a key file: one key a line, "<keyId> <secret>". Blank lines
// and lines starting with # are ignored, and so are blanks (spaces, tabs) at
// the start and end of a line, and a CR before the LF. The key id is 1 to 64
// characters of [A-Za-z0-9_-]; the secret is the rest of the line after one
// or more blanks, at least 32 bytes, used as written (a secret from
// `openssl rand -hex 32` is its 64 characters, not 32 decoded bytes). A
// malformed line, a duplicate id or a file without keys is an error. Errors
// name the line but show nothing of it, not even the id: on a line written
// the wrong way round, the "id" is the secret.
func ParseKeys(data []byte) (Keys, error) {
	keys := Keys{}
	lineOf := map[string]int{}
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		line = strings.Trim(line, " \t\r")
		if line == "" || line[0] == '#' {
			continue
		}
		j := strings.IndexAny(line, " \t")
		if j < 0 {
			return nil, fmt.Errorf("line %d: want \"<keyId> <secret>\"", n)
		}
		id, secret := line[:j], line[j+1:]
		if id == "" || len(id) > maxKeyIDLen || !isToken(id) {
			return nil, fmt.Errorf("line %d: key id must be 1 to %d characters of A-Z a-z 0-9 _ -", n, maxKeyIDLen)
		}
		secret = strings.Trim(secret, " \t")
		if len(secret) < minSecretLen {
			return nil, fmt.Errorf("line %d: secret shorter than %d bytes", n, minSecretLen)
		}
		if prev, dup := lineOf[id]; dup {
			return nil, fmt.Errorf("line %d: key id already on line %d", n, prev)
		}
		lineOf[id] = n
		keys[id] = []byte(secret)
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys")
	}
	return keys, nil
}
