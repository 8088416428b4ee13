package main

import (
	"context"
	"flag"
	"fmt"
	"github.com/flashgate/flashgate/internal/natsurl"
	"io"
	"strings"

	"gopkg.in/yaml.v3"
)

const configUsage = `Usage:
  flashgate config print [--config FILE] [serve flags]

Print the configuration 'flashgate serve' would run with, given the same
flags, FLASHGATE_* variables and config file, as YAML that --config accepts.
Each value says where it came from; secrets are redacted.

` + precedenceHelp

// configCmd runs `flashgate config ...`.
func configCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "print" {
		if len(args) > 0 && args[0] != "help" && args[0] != "-h" && args[0] != "--help" {
			fmt.Fprintf(stderr, "flashgate config: unknown verb %q\n\n", args[0])
		}
		fmt.Fprint(stderr, configUsage)
		return errUsage
	}
	fs, c := serveFlags("config print", stderr)
	src, err := resolve(fs, args[1:], getenv)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := c.validate(fs, src); err != nil {
		return err
	}
	return printConfig(stdout, "flashgate serve", fs, src)
}

// emptyMeans says what an empty value of a serve flag means, for config print.
var emptyMeans = map[string]string{
	"admin-token":         "generated, kept in the data directory",
	"nats-url":            "embedded NATS server",
	"nats-creds":          "none",
	"nats-listen":         "embedded NATS not on TCP",
	"metrics-addr":        "/metrics on the --http listener",
	"debug-addr":          "pprof off",
	"token-key-file":      "generated in the data directory",
	"session-key-file":    "generated in the data directory",
	"identity-public-key": "anonymous sessions, no external identity",
	"identity-issuer":     "no external identity",
	"identity-audience":   "no external identity",
}

// printConfig writes every flag of fs (the flags of command) except config as a YAML config file:
// keys sorted, each value followed by a comment saying where it came from.
// A secret is not written: its line is a comment showing <redacted>, so the
// output loads with --config and never sets a placeholder as a secret.
func printConfig(w io.Writer, command string, fs *flag.FlagSet, src sources) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Effective configuration of %s.\n", command)
	b.WriteString("# Precedence: command-line flag > FLASHGATE_* variable > config file > default.\n")
	if cf := fs.Lookup("config"); cf != nil {
		if path := cf.Value.String(); path != "" {
			fmt.Fprintf(&b, "# Config file: %s (%s)\n", path, src["config"])
		} else {
			b.WriteString("# Config file: none\n")
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" || err != nil {
			return
		}
		value := f.Value.String()
		note := src[f.Name].String()
		if value == "" && emptyMeans[f.Name] != "" {
			note += " (" + emptyMeans[f.Name] + ")"
		}
		if secretFlag(f.Name) && value != "" {
			fmt.Fprintf(&b, "# %s: <redacted> # %s; secrets are not printed: give it by --%s or %s\n",
				f.Name, note, f.Name, envName(f.Name))
			return
		}
		if natsurl.HasCredentials(value) {
			// Printed without its credentials, as a live value: a reloaded
			// file must still reach the same NATS, not start an empty
			// embedded installation.
			fmt.Fprintf(&b, "%s: %q # %s; credentials removed: give them by --nats-creds or %s\n",
				f.Name, natsurl.Strip(value), note, envName(f.Name))
			return
		}
		var v string
		if v, err = yamlScalar(f); err == nil {
			fmt.Fprintf(&b, "%s: %s # %s\n", f.Name, v, note)
		}
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// yamlScalar renders f's value as a one-line YAML scalar that reads back as
// the same string.
func yamlScalar(f *flag.Flag) (string, error) {
	v := f.Value.String()
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case bool, int, int64, uint, uint64, float64:
			return v, nil
		}
	}
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
	if strings.ContainsAny(v, "\n\r") {
		n.Style = yaml.DoubleQuotedStyle
	}
	out, err := yaml.Marshal(n)
	if err != nil {
		return "", fmt.Errorf("print --%s: %w", f.Name, err)
	}
	return strings.TrimSuffix(string(out), "\n"), nil
}

// redact returns value with any secret in it replaced by <redacted>, and
// whether it replaced anything. A flag named for a secret (token,
// password, secret; not the files that hold them) is redacted whole; in
// any other value, the credentials of URLs (user:password@ or token@) are.
func redact(name, value string) (string, bool) {
	switch {
	case value == "":
		return "", false
	case secretFlag(name):
		return "<redacted>", true
	case natsurl.HasCredentials(value):
		return natsurl.Redact(value), true
	}
	return value, false
}

// secretFlag reports whether the flag called name holds a secret itself.
func secretFlag(name string) bool {
	if strings.HasSuffix(name, "-file") || strings.HasSuffix(name, "-creds") {
		return false
	}
	for _, w := range []string{"token", "password", "secret"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}
