package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// envOf returns a getenv reading m.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeFile writes content to a file name in a fresh temporary directory
// and returns its path.
func writeFile(tb testing.TB, name, content string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// resolveServe resolves serve's flags from args and env.
func resolveServe(tb testing.TB, args []string, env map[string]string) (*serveConfig, *flag.FlagSet, sources, string, error) {
	tb.Helper()
	var out bytes.Buffer
	fs, c := serveFlags("serve", &out)
	src, err := resolve(fs, args, envOf(env))
	return c, fs, src, out.String(), err
}

// TestResolvePrecedence sets each of several flags from every combination
// of config file, environment and command line, and checks the rule:
// flag > FLASHGATE_* variable > config file > default.
func TestResolvePrecedence(t *testing.T) {
	type layer struct{ file, env, flag string } // the value each layer gives
	cases := []struct {
		name   string
		values layer
		def    string
		get    func(*serveConfig) string
	}{
		{"http", layer{"127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"}, "127.0.0.1:8080", func(c *serveConfig) string { return c.HTTP }},
		{"session-rate", layer{"500", "600", "-1"}, "1000", func(c *serveConfig) string { return fmt.Sprint(c.SessionRate) }},
		{"decision-wait", layer{"3s", "4s", "5s"}, "2s", func(c *serveConfig) string { return c.DecisionWait.String() }},
		{"demo", layer{"false", "true", "false"}, "true", func(c *serveConfig) string { return fmt.Sprint(c.Demo) }},
		{"replicas", layer{"3", "5", "2"}, "1", func(c *serveConfig) string { return fmt.Sprint(c.Replicas) }},
		{"writer-idle", layer{"1m0s", "2h0m0s", "0s"}, "10m0s", func(c *serveConfig) string { return c.WriterIdle.String() }},
		{"ready-lag", layer{"1", "2", "3"}, "10000", func(c *serveConfig) string { return fmt.Sprint(c.ReadyLag) }},
		{"projection-flood-lag", layer{"4", "5", "6"}, "50000", func(c *serveConfig) string { return fmt.Sprint(c.FloodLag) }},
		{"log-format", layer{"json", "text", "auto"}, "auto", func(c *serveConfig) string { return c.LogFormat }},
		{"admin-token", layer{"from-file", "from-env", "from-flag"}, "", func(c *serveConfig) string { return c.AdminToken }},
	}
	for _, tc := range cases {
		for mask := 0; mask < 8; mask++ {
			useFile, useEnv, useFlag := mask&1 != 0, mask&2 != 0, mask&4 != 0
			t.Run(fmt.Sprintf("%s/file=%v,env=%v,flag=%v", tc.name, useFile, useEnv, useFlag), func(t *testing.T) {
				env := map[string]string{}
				var args []string
				want, wantSrc := tc.def, "default"
				if useFile {
					path := writeFile(t, "flashgate.yaml", fmt.Sprintf("%s: %q\n", tc.name, tc.values.file))
					args = append(args, "--config", path)
					want, wantSrc = tc.values.file, "file "+path
				}
				if useEnv {
					env[envName(tc.name)] = tc.values.env
					want, wantSrc = tc.values.env, "env "+envName(tc.name)
				}
				if useFlag {
					args = append(args, "--"+tc.name+"="+tc.values.flag)
					want, wantSrc = tc.values.flag, "flag"
				}
				c, _, src, out, err := resolveServe(t, args, env)
				if err != nil {
					t.Fatalf("resolve: %v %s", err, out)
				}
				if got := tc.get(c); got != want {
					t.Errorf("value %q, want %q", got, want)
				}
				if got := src[tc.name].String(); got != wantSrc {
					t.Errorf("source %q, want %q", got, wantSrc)
				}
			})
		}
	}
}

func TestResolveConfigFile(t *testing.T) {
	fromEnv := writeFile(t, "env.yaml", "replicas: 3\n")
	fromFlag := writeFile(t, "flag.yaml", "replicas: 4\n")

	// FLASHGATE_CONFIG names the file.
	c, _, src, _, err := resolveServe(t, nil, map[string]string{"FLASHGATE_CONFIG": fromEnv})
	if err != nil || c.Replicas != 3 || src["replicas"].String() != "file "+fromEnv || src["config"].String() != "env FLASHGATE_CONFIG" {
		t.Errorf("FLASHGATE_CONFIG: replicas %d from %s, config from %s, %v", c.Replicas, src["replicas"], src["config"], err)
	}
	// --config wins over FLASHGATE_CONFIG, like every flag over its variable.
	c, _, src, _, err = resolveServe(t, []string{"-config=" + fromFlag}, map[string]string{"FLASHGATE_CONFIG": fromEnv})
	if err != nil || c.Replicas != 4 || src["config"].String() != "flag" {
		t.Errorf("--config over FLASHGATE_CONFIG: replicas %d, config from %s, %v", c.Replicas, src["config"], err)
	}
	// Without --config nothing is read.
	c, _, src, _, err = resolveServe(t, []string{"--demo=false"}, nil)
	if err != nil || c.Replicas != 1 || src["replicas"].kind != fromDefault || c.Demo {
		t.Errorf("no file: replicas %d from %s, %v", c.Replicas, src["replicas"], err)
	}
	// An empty file sets nothing.
	c, _, _, _, err = resolveServe(t, []string{"--config", writeFile(t, "empty.yaml", "# nothing\n")}, nil)
	if err != nil || c.Replicas != 1 {
		t.Errorf("empty file: %d %v", c.Replicas, err)
	}
}

// TestResolveAnyFlagSet: resolve works for any command's flags; a command
// without a config flag never reads FLASHGATE_CONFIG, and parse behaves as
// it always did (environment, then the command line).
func TestResolveAnyFlagSet(t *testing.T) {
	var out bytes.Buffer
	fs := newFlags("other", &out)
	n := fs.Int("n", 1, "")
	d := fs.Duration("every", time.Second, "")
	v := fs.Bool("v", false, "")
	env := map[string]string{"FLASHGATE_CONFIG": "/does/not/exist.yaml", "FLASHGATE_N": "5", "FLASHGATE_EVERY": "3s"}
	if err := parse(fs, []string{"-v", "--every", "4s", "rest", "-n", "9"}, envOf(env)); err != nil {
		t.Fatalf("parse: %v %s", err, out.String())
	}
	if *n != 5 || *d != 4*time.Second || !*v || fs.NArg() != 3 {
		t.Errorf("n %d every %v v %v args %v", *n, *d, *v, fs.Args())
	}

	// A config file applies to any flag set with a config flag.
	fs = newFlags("other", &out)
	fs.String("config", "", "")
	n = fs.Int("n", 1, "")
	path := writeFile(t, "c.yaml", "n: 7\n")
	if err := parse(fs, []string{"--config", path}, envOf(nil)); err != nil || *n != 7 {
		t.Errorf("config: n %d %v", *n, err)
	}
	// parse prints a file error and returns errUsage, like any flag error.
	out.Reset()
	bad := writeFile(t, "bad.yaml", "m: 7\n")
	if err := parse(fs, []string{"--config", bad}, envOf(nil)); err != errUsage || !strings.Contains(out.String(), `unknown key "m"`) {
		t.Errorf("bad file: %v %q", err, out.String())
	}
}

func TestCommandLine(t *testing.T) {
	fs, _ := serveFlags("serve", &bytes.Buffer{})
	cases := []struct {
		args []string
		want map[string]string
	}{
		{nil, map[string]string{}},
		{[]string{"--config", "a.yaml"}, map[string]string{"config": "a.yaml"}},
		{[]string{"-config=a.yaml", "--config=b.yaml"}, map[string]string{"config": "b.yaml"}},
		// A bool flag takes no separate value: "false" ends the flags.
		{[]string{"--demo", "false", "--config", "a.yaml"}, map[string]string{"demo": "true"}},
		{[]string{"--demo=false", "--replicas", "3"}, map[string]string{"demo": "false", "replicas": "3"}},
		{[]string{"--", "--config", "a.yaml"}, map[string]string{}},
	}
	for _, tc := range cases {
		got, err := commandLine(fs, tc.args)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%q: %v %v, want %v", tc.args, got, err, tc.want)
		}
	}
	if _, err := commandLine(fs, []string{"--nope"}); err == nil {
		t.Error("unknown flag accepted")
	}
}

// TestConfigFileErrors: each bad file fails naming the file, the line and
// the key.
func TestConfigFileErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "http: 127.0.0.1:1\nsesion-rate: 5\n", []string{":2:", `unknown key "sesion-rate"`, `did you mean "session-rate"`}},
		{"underscore key", "max_body: 1024\n", []string{`unknown key "max_body"`, `did you mean "max-body"`}},
		{"far unknown key", "colour: blue\n", []string{`unknown key "colour"`, "flag names"}},
		{"int", "replicas: three\n", []string{":1:", "replicas", "want an integer", `"three"`}},
		{"duration without unit", "decision-wait: 3\n", []string{"decision-wait", "want a duration"}},
		{"bool", "demo: maybe\n", []string{"demo", "true or false"}},
		{"float", "session-rate: fast\n", []string{"session-rate", "want a number"}},
		{"uint", "ready-lag: -5\n", []string{"ready-lag", "whole number"}},
		{"list", "http:\n  - a\n  - b\n", []string{"http", "list or mapping"}},
		{"null", "nats-url:\n", []string{"nats-url", "no value"}},
		{"twice", "replicas: 2\nreplicas: 3\n", []string{":2:", "replicas", "twice", "line 1"}},
		{"config in config", "config: other.yaml\n", []string{"config", "cannot name another"}},
		{"not a mapping", "- http\n", []string{"want a mapping"}},
		{"not yaml", "http: [\n", []string{"config file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "flashgate.yaml", tc.yaml)
			_, _, _, _, err := resolveServe(t, []string{"--config", path}, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range append(tc.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	_, _, _, _, err := resolveServe(t, nil, map[string]string{"FLASHGATE_CONFIG": "/no/such/flashgate.yaml"})
	if err == nil || !strings.Contains(err.Error(), "/no/such/flashgate.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestResolveUsageErrors(t *testing.T) {
	// A bad variable is a usage error naming the variable.
	_, _, _, out, err := resolveServe(t, nil, map[string]string{"FLASHGATE_DECISION_WAIT": "soon"})
	if err != errUsage || !strings.Contains(out, `FLASHGATE_DECISION_WAIT="soon"`) || !strings.Contains(out, "duration") {
		t.Errorf("bad env: %v %q", err, out)
	}
	// --help reads no file and documents the precedence rule.
	_, _, _, out, err = resolveServe(t, []string{"--help"}, map[string]string{"FLASHGATE_CONFIG": "/no/such/file"})
	if err != errUsage || !strings.Contains(out, "highest precedence first") || !strings.Contains(out, "-metrics-addr") {
		t.Errorf("help: %v %q", err, out)
	}
	_, _, _, _, err = resolveServe(t, []string{"--nope"}, nil)
	if err != errUsage {
		t.Errorf("unknown flag: %v", err)
	}
}

func TestRedact(t *testing.T) {
	cases := []struct {
		name, value, want string
		secret            bool
	}{
		{"admin-token", "s3cret", "<redacted>", true},
		{"admin-token", "", "", false},
		{"nats-password", "x", "<redacted>", true},
		{"token-key-file", "/etc/keys.json", "/etc/keys.json", false},
		{"nats-creds", "/etc/nats.creds", "/etc/nats.creds", false},
		{"nats-url", "nats://10.0.0.1:4222", "nats://10.0.0.1:4222", false},
		{"nats-url", "nats://alice:pw@h:4222", "nats://<redacted>@h:4222", true},
		{"nats-url", "nats://tok@h:4222,nats://h2:4222", "nats://<redacted>@h:4222,nats://h2:4222", true},
		{"nats-url", "tls://u:p@h/x@y", "tls://<redacted>@h/x@y", true},
		{"nats-url", "alice:pw@h:4222, bob:pw@h2:4222", "<redacted>@h:4222,<redacted>@h2:4222", true},
		{"http", "127.0.0.1:8080", "127.0.0.1:8080", false},
	}
	for _, tc := range cases {
		got, secret := redact(tc.name, tc.value)
		if got != tc.want || secret != tc.secret {
			t.Errorf("redact(%q, %q) = %q, %v; want %q, %v", tc.name, tc.value, got, secret, tc.want, tc.secret)
		}
	}
}

func TestDescribe(t *testing.T) {
	path := writeFile(t, "f.yaml", "demo: false\nreplicas: 2\n")
	_, fs, src, _, err := resolveServe(t, []string{"--config", path, "--http", "127.0.0.1:1", "--admin-token", "s3cret"},
		map[string]string{"FLASHGATE_DATA": "/var/lib/fg"})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"http":        "--http=127.0.0.1:1",
		"data":        "FLASHGATE_DATA=/var/lib/fg",
		"replicas":    path + ":2: replicas: 2",
		"lease-ttl":   "--lease-ttl=5s (default)",
		"nats-url":    `--nats-url="" (default)`,
		"admin-token": "--admin-token=<redacted>",
	} {
		if got := describe(fs, src, name); got != want {
			t.Errorf("describe(%s) = %q, want %q", name, got, want)
		}
	}
}
