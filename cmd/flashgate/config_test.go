package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// validateServe resolves serve's flags and validates them.
func validateServe(tb testing.TB, args []string, env map[string]string) error {
	tb.Helper()
	c, fs, src, out, err := resolveServe(tb, args, env)
	if err != nil {
		tb.Fatalf("resolve %q: %v %s", args, err, out)
	}
	return c.validate(fs, src)
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keyFile, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := func(yaml string) string { return writeFile(t, "flashgate.yaml", yaml) }
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want []string // each in the error; none: valid
	}{
		{name: "defaults"},
		{name: "all set well", args: []string{
			"--lease-ttl=1s", "--decision-wait=10ms", "--session-ttl=1m", "--max-body=1024",
			"--session-rate=-1", "--max-in-flight=1", "--max-batch=1", "--writer-idle=1s", "--ready-lag=1", "--log-level=debug", "--log-format=json",
			"--heap-floor=512MiB",
			"--http=:0", "--metrics-addr=127.0.0.1:9100", "--debug-addr=localhost:6060", "--nats-listen=0.0.0.0:4222",
			"--token-key-file", keyFile, "--session-key-file", keyFile,
			"--identity-public-key", keyFile, "--identity-issuer=https://shop", "--identity-audience=fg",
		}},
		{name: "nats url with creds", args: []string{"--nats-url=nats://h:4222", "--nats-creds", keyFile, "--replicas=5"}},
		{name: "log level any case", env: map[string]string{"FLASHGATE_LOG_LEVEL": "WARN"}},
		{name: "two listeners on :0", args: []string{"--http=127.0.0.1:0", "--metrics-addr=127.0.0.1:0"}},

		{name: "replicas on the embedded server", args: []string{"--replicas=3"}, want: []string{"--replicas=3", "embedded NATS"}},
		{name: "admin token twice", args: []string{"--admin-token=x", "--admin-token-file", keyFile}, want: []string{"--admin-token-file", "once"}},
		{name: "admin token file missing", args: []string{"--admin-token-file=/nonexistent/token"}, want: []string{"--admin-token-file"}},
		{name: "replicas 0", args: []string{"--replicas=0"}, want: []string{"--replicas=0", "1 to 5"}},
		{name: "replicas 6 from env", env: map[string]string{"FLASHGATE_REPLICAS": "6"}, want: []string{"FLASHGATE_REPLICAS=6", "1 to 5"}},
		{name: "replicas from file", args: []string{"--config", conf("demo: false\nreplicas: 7\n")}, want: []string{"flashgate.yaml:2: replicas: 7", "1 to 5"}},
		{name: "lease-ttl", args: []string{"--lease-ttl=500ms"}, want: []string{"--lease-ttl=500ms", "at least 1s"}},
		{name: "lease-ttl zero", args: []string{"--lease-ttl=0s"}, want: []string{"--lease-ttl=0s"}},
		{name: "decision-wait short", args: []string{"--decision-wait=1ms"}, want: []string{"--decision-wait=1ms", "10ms to 60s"}},
		{name: "decision-wait long", env: map[string]string{"FLASHGATE_DECISION_WAIT": "2m"}, want: []string{"FLASHGATE_DECISION_WAIT=2m0s", "10ms to 60s"}},
		{name: "decision-wait negative", args: []string{"--decision-wait=-1s"}, want: []string{"--decision-wait=-1s"}},
		{name: "session-ttl", args: []string{"--session-ttl=30s"}, want: []string{"--session-ttl=30s", "at least 1m"}},
		{name: "max-body small", args: []string{"--max-body=100"}, want: []string{"--max-body=100", "1 KiB to 16 MiB"}},
		{name: "max-body large", args: []string{"--max-body=16777217"}, want: []string{"--max-body=16777217"}},
		{name: "heap floor off", env: map[string]string{"FLASHGATE_HEAP_FLOOR": "0"}},
		{name: "heap floor any case", args: []string{"--heap-floor=AUTO"}},
		{name: "heap-floor", args: []string{"--heap-floor=1.5GiB"}, want: []string{"--heap-floor=1.5GiB", "not a size", "or auto"}},
		{name: "max-in-flight", args: []string{"--max-in-flight=0"}, want: []string{"--max-in-flight=0", "more than 0"}},
		{name: "max-batch", args: []string{"--max-batch=-3"}, want: []string{"--max-batch=-3", "more than 0"}},
		{name: "writer-idle never", args: []string{"--writer-idle=0"}},
		{name: "writer-idle short", args: []string{"--writer-idle=500ms"}, want: []string{"--writer-idle=500ms", "at least 1s, or 0"}},
		{name: "writer-idle negative", args: []string{"--writer-idle=-1m"}, want: []string{"--writer-idle=-1m0s"}},
		{name: "max-queue-streams", args: []string{"--max-queue-streams=0"}, want: []string{"--max-queue-streams=0", "more than 0"}},
		{name: "session-rate 0", args: []string{"--session-rate=0"}, want: []string{"--session-rate=0", "-1 for no cap"}},
		{name: "session-rate -2", args: []string{"--session-rate=-2"}, want: []string{"--session-rate=-2"}},
		{name: "session-rate inf", args: []string{"--session-rate=+Inf"}, want: []string{"--session-rate=+Inf"}},
		{name: "ready-lag", args: []string{"--ready-lag=0"}, want: []string{"--ready-lag=0", "more than 0"}},
		{name: "projection-flood-lag", args: []string{"--projection-flood-lag=0"}, want: []string{"--projection-flood-lag=0", "more than 0"}},
		{name: "fulfil-flood-rate no limit", args: []string{"--fulfil-flood-rate=-1"}},
		{name: "fulfil-flood-rate 0", args: []string{"--fulfil-flood-rate=0"}, want: []string{"--fulfil-flood-rate=0", "-1 for no limit"}},
		{name: "fulfil-flood-rate NaN", args: []string{"--fulfil-flood-rate=NaN"}, want: []string{"--fulfil-flood-rate=NaN"}},
		{name: "fulfil-flood-rate below workers/10", args: []string{"--fulfil-workers=64", "--fulfil-flood-rate=2"}, want: []string{"--fulfil-flood-rate=2", "--fulfil-workers / 10 (7)"}},
		{name: "log-level", args: []string{"--log-level=loud"}, want: []string{"--log-level=loud", "debug, info, warn, error"}},
		{name: "log-format", env: map[string]string{"FLASHGATE_LOG_FORMAT": "xml"}, want: []string{"FLASHGATE_LOG_FORMAT=xml", "auto, text, json"}},
		{name: "http no port", args: []string{"--http=localhost"}, want: []string{"--http=localhost", "host:port"}},
		{name: "http empty", args: []string{"--config", conf(`http: ""` + "\n")}, want: []string{`flashgate.yaml:1: http: ""`, "host:port"}},
		{name: "metrics-addr port", args: []string{"--metrics-addr=:metrics"}, want: []string{"--metrics-addr=:metrics", "port number"}},
		{name: "debug-addr", env: map[string]string{"FLASHGATE_DEBUG_ADDR": "6060"}, want: []string{"FLASHGATE_DEBUG_ADDR=6060", "host:port"}},
		{name: "nats-listen", args: []string{"--nats-listen=0.0.0.0:99999"}, want: []string{"--nats-listen=0.0.0.0:99999", "port number"}},
		{name: "same address", args: []string{"--metrics-addr=127.0.0.1:8080"}, want: []string{"--metrics-addr=127.0.0.1:8080", "same address as --http"}},
		{name: "nats-listen with nats-url", args: []string{"--nats-url=nats://h:4222", "--nats-listen=:4222"}, want: []string{"--nats-listen=:4222", "--nats-url"}},
		{name: "creds without url", args: []string{"--nats-creds", keyFile}, want: []string{"--nats-creds=", "only used with --nats-url"}},
		{name: "sync-always with nats-url", args: []string{"--nats-url=nats://h:4222", "--sync-always"}, want: []string{"--sync-always=true"}},
		{name: "identity key alone", args: []string{"--identity-public-key", keyFile}, want: []string{"--identity-public-key=", "--identity-issuer and --identity-audience"}},
		{name: "identity issuer alone", env: map[string]string{"FLASHGATE_IDENTITY_ISSUER": "https://shop"}, want: []string{"FLASHGATE_IDENTITY_ISSUER=https://shop", "--identity-public-key and --identity-audience"}},
		{name: "identity key missing file", args: []string{"--identity-public-key", "/no/such.pem", "--identity-issuer=i", "--identity-audience=a"}, want: []string{"--identity-public-key=/no/such.pem", "no such file"}},
		{name: "token key file missing", args: []string{"--token-key-file=/no/keys.json"}, want: []string{"--token-key-file=/no/keys.json", "no such file"}},
		{name: "session key file is a dir", args: []string{"--session-key-file", dir}, want: []string{"--session-key-file=" + dir, "is a directory"}},
		{name: "data empty", env: map[string]string{"FLASHGATE_DATA": ""}, args: []string{"--data="}, want: []string{`--data=""`}},
		{name: "all errors at once", args: []string{"--replicas=9", "--max-batch=0"}, want: []string{"invalid configuration:\n", "--replicas=9", "--max-batch=0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := validateServe(t, tc.args, tc.env)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("valid configuration refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("invalid configuration accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			var se *settingError
			if !errors.As(err, &se) || se.Flag == "" {
				t.Errorf("error %v names no setting", err)
			}
		})
	}
}

// TestServeRefusesInvalidConfig: serve exits 1 before starting anything
// (the data directory is not even created).
func TestServeRefusesInvalidConfig(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"serve", "--data", data, "--replicas", "9"}, envOf(nil), &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "flashgate serve: invalid configuration: --replicas=9: must be 1 to 5") {
		t.Errorf("exit %d: %s", code, errb.String())
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("data directory touched: %v", err)
	}
	// A bad config file is exit 1 too, naming file and key.
	path := writeFile(t, "flashgate.yaml", "htttp: 127.0.0.1:1\n")
	errb.Reset()
	code = run(context.Background(), []string{"serve", "--data", data}, envOf(map[string]string{"FLASHGATE_CONFIG": path}), &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), path+`:1: unknown key "htttp" (did you mean "http"?)`) {
		t.Errorf("exit %d: %s", code, errb.String())
	}
}

func TestServeHelpDocumentsPrecedence(t *testing.T) {
	var out, errb bytes.Buffer
	run(context.Background(), []string{"serve", "--help"}, envOf(nil), &out, &errb)
	help := errb.String()
	for _, w := range []string{"highest precedence first", "1. its flag on the command line", "2. its environment variable",
		"3. the config file", "4. the built-in default", "FLASHGATE_CONFIG", "config print", "-log-format", "-ready-lag"} {
		if !strings.Contains(help, w) {
			t.Errorf("serve --help lacks %q:\n%s", w, help)
		}
	}
}

// configPrint runs `flashgate config print args...`.
func configPrint(tb testing.TB, args []string, env map[string]string) (string, string, int) {
	tb.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"config", "print"}, args...), envOf(env), &out, &errb)
	return out.String(), errb.String(), code
}

// printedLines maps each key of config print output to its line; a
// commented-out secret counts under its key, the header does not.
func printedLines(out string) map[string]string {
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		key, _, ok := strings.Cut(strings.TrimPrefix(l, "# "), ": ")
		if ok && !strings.Contains(key, " ") && key == strings.ToLower(key) {
			lines[key] = l
		}
	}
	return lines
}

func TestConfigPrint(t *testing.T) {
	path := writeFile(t, "flashgate.yaml", "demo: false\ndecision-wait: 3s\nhttp: 127.0.0.1:9000\n")
	env := map[string]string{"FLASHGATE_SESSION_RATE": "250", "FLASHGATE_ADMIN_TOKEN": "env-s3cret", "FLASHGATE_CONFIG": path}
	out, errOut, code := configPrint(t, []string{"--http", "127.0.0.1:9001", "--nats-url", "nats://alice:pw@h:4222"}, env)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := printedLines(out)
	fs, _ := serveFlags("serve", &bytes.Buffer{})
	n := 0
	var prev string
	for _, l := range strings.Split(out, "\n") {
		if key, _, ok := strings.Cut(l, ": "); ok && !strings.HasPrefix(l, "#") {
			if key < prev {
				t.Errorf("%s after %s: not sorted", key, prev)
			}
			prev = key
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if f.Name == "config" {
			if _, ok := lines["config"]; ok {
				t.Error("config printed as a setting")
			}
			return
		}
		if _, ok := lines[f.Name]; !ok {
			t.Errorf("--%s not printed", f.Name)
		}
	})
	if len(lines) != n-1 {
		t.Errorf("%d settings printed, the flag set has %d besides config", len(lines), n-1)
	}
	for key, want := range map[string]string{
		"http":          "http: 127.0.0.1:9001 # flag",
		"demo":          "demo: false # file " + path,
		"decision-wait": "decision-wait: 3s # file " + path,
		"session-rate":  "session-rate: 250 # env FLASHGATE_SESSION_RATE",
		"replicas":      "replicas: 1 # default",
		"session-ttl":   "session-ttl: 24h0m0s # default",
		"admin-token":   "# admin-token: <redacted> # env FLASHGATE_ADMIN_TOKEN;",
		"nats-url":      `nats-url: "nats://h:4222" # flag; credentials removed`,
	} {
		if !strings.HasPrefix(lines[key], want) {
			t.Errorf("line %q, want %q", lines[key], want)
		}
	}
	if strings.Contains(out, "env-s3cret") || strings.Contains(out, "pw@") {
		t.Errorf("secret printed:\n%s", out)
	}
	if !strings.Contains(out, "# Config file: "+path+" (env FLASHGATE_CONFIG)") {
		t.Errorf("config file not named:\n%s", out)
	}

	// An unset admin token says what happens instead.
	out, _, _ = configPrint(t, nil, nil)
	if l := printedLines(out)["admin-token"]; l != `admin-token: "" # default (generated, kept in the data directory)` {
		t.Errorf("admin-token line %q", l)
	}
}

// TestConfigPrintRoundTrip: the printed configuration, given back with
// --config and nothing else, resolves to the same configuration (secrets
// aside: they are not printed) and prints the same values.
func TestConfigPrintRoundTrip(t *testing.T) {
	keyFile := writeFile(t, "keys.json", "{}")
	first := writeFile(t, "first.yaml", "demo: false\nmax-body: 2048\nidentity-issuer: \"https://shop.example\"\n")
	args := []string{"--config", first, "--http", "0.0.0.0:8443", "--decision-wait", "1500ms", "--sync-always",
		"--identity-public-key", keyFile, "--identity-audience", "yes", "--admin-token", "s3cret", "--log-level", "debug"}
	env := map[string]string{"FLASHGATE_SESSION_RATE": "-1", "FLASHGATE_TOKEN_KEY_FILE": keyFile, "FLASHGATE_DATA": "/var/lib/flash gate: 1",
		"FLASHGATE_READY_LAG": "42", "FLASHGATE_METRICS_ADDR": "[::1]:9100", "FLASHGATE_IDENTITY_ISSUER": "true"}
	out, errOut, code := configPrint(t, args, env)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	printed := writeFile(t, "printed.yaml", out)
	out2, errOut, code := configPrint(t, []string{"--config", printed}, nil)
	if code != 0 {
		t.Fatalf("printed config refused: exit %d: %s\n%s", code, errOut, out)
	}

	want, _, _, _, err := resolveServe(t, args, env)
	if err != nil {
		t.Fatal(err)
	}
	got, _, src, _, err := resolveServe(t, []string{"--config", printed}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want.AdminToken = "" // secrets are not printed
	if !reflect.DeepEqual(got, want) || got.AdminToken != "" {
		t.Errorf("round trip:\n got %+v\nwant %+v\nprinted:\n%s", got, want, out)
	}
	if src["data"].kind != fromFile || src["replicas"].kind != fromFile {
		t.Errorf("after the round trip, data from %s, replicas from %s; want the file", src["data"], src["replicas"])
	}
	// Same values printed, now every one from the file.
	strip := func(s string) map[string]string {
		m := map[string]string{}
		for k, l := range printedLines(s) {
			if k != "admin-token" { // printed as a comment, then as ""
				v, _, _ := strings.Cut(l, " # ")
				m[k] = v
			}
		}
		return m
	}
	if a, b := strip(out), strip(out2); !reflect.DeepEqual(a, b) {
		t.Errorf("printed values changed:\n%v\n%v", a, b)
	}
}

func TestConfigPrintInvalid(t *testing.T) {
	_, errOut, code := configPrint(t, []string{"--max-batch", "0"}, nil)
	if code != 1 || !strings.Contains(errOut, "invalid configuration: --max-batch=0: must be more than 0") {
		t.Errorf("exit %d: %s", code, errOut)
	}
	// The same message serve gives.
	var out, errb bytes.Buffer
	run(context.Background(), []string{"serve", "--max-batch", "0"}, envOf(nil), &out, &errb)
	if a, b := strings.TrimPrefix(errOut, "flashgate config: "), strings.TrimPrefix(errb.String(), "flashgate serve: "); a != b {
		t.Errorf("config print says %q, serve says %q", a, b)
	}
	if _, errOut, code := configPrint(t, []string{"--replicas", "x"}, nil); code != 2 || !strings.Contains(errOut, "replicas") {
		t.Errorf("bad flag: exit %d: %s", code, errOut)
	}
	for _, args := range [][]string{nil, {"show"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), append([]string{"config"}, args...), envOf(nil), &out, &errb); code != 2 || !strings.Contains(errb.String(), "flashgate config print") {
			t.Errorf("config %q: exit %d: %s", args, code, errb.String())
		}
	}
}
