package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Precedence. Every command resolves each of its flags by one rule, highest
// first:
//
//  1. the flag on the command line:        --session-rate 500
//  2. its environment variable:            FLASHGATE_SESSION_RATE=500
//  3. the config file, for a command that has a --config flag (given by
//     --config or FLASHGATE_CONFIG; YAML whose keys are the flag names):
//     session-rate: 500
//  4. the built-in default.
//
// resolve applies the sources lowest first (file, environment, command line),
// each overwriting the one before, and records where every value came from.
// An empty environment variable counts as unset.
const precedenceHelp = `Every setting comes from, highest precedence first:
  1. its flag on the command line        --session-rate 500
  2. its environment variable            FLASHGATE_SESSION_RATE=500
  3. the config file (--config FILE or FLASHGATE_CONFIG=FILE; YAML whose keys
     are the flag names)                 session-rate: 500
  4. the built-in default
`

// errUsage is returned after a flag error has been printed.
var errUsage = errors.New("usage")

// newFlags returns a flag set whose flags take their defaults from
// FLASHGATE_* variables (applied by parse).
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("flashgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// envName is the variable that sets flag f: --http-addr -> FLASHGATE_HTTP_ADDR.
func envName(f string) string {
	return "FLASHGATE_" + strings.ToUpper(strings.ReplaceAll(f, "-", "_"))
}

// parse resolves fs from args, FLASHGATE_* variables and, if fs has a
// "config" flag, the config file (see Precedence). Every error has been
// printed to fs.Output() when it returns errUsage.
func parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	_, err := resolve(fs, args, getenv)
	if err != nil && err != errUsage {
		fmt.Fprintln(fs.Output(), err)
		return errUsage
	}
	return err
}

// sourceKind says which layer of the precedence set a value.
type sourceKind int

const (
	fromDefault sourceKind = iota
	fromFile
	fromEnv
	fromFlag
)

// source is where one flag's value came from.
type source struct {
	kind  sourceKind
	where string // fromEnv: the variable; fromFile: the file
	line  int    // fromFile: the line of the key
}

// String is the annotation config print writes: "default", "file PATH",
// "env FLASHGATE_X" or "flag".
func (s source) String() string {
	switch s.kind {
	case fromFile:
		return "file " + s.where
	case fromEnv:
		return "env " + s.where
	case fromFlag:
		return "flag"
	}
	return "default"
}

// sources maps every flag of a flag set to where its value came from.
type sources map[string]source

// resolve sets every flag of fs by the precedence rule (see Precedence) and
// returns where each value came from. A bad command line or environment
// variable is printed to fs.Output() and returned as errUsage; a bad or
// unreadable config file is returned as an error naming the file and key.
func resolve(fs *flag.FlagSet, args []string, getenv func(string) string) (sources, error) {
	src := make(sources)
	fs.VisitAll(func(f *flag.Flag) { src[f.Name] = source{} })

	// The command line is read first only to learn which flags it gives
	// (and the config file it names); its values are applied last.
	given, err := commandLine(fs, args)
	if err != nil {
		// A bad flag or --help: let fs.Parse report it before any file is read.
		_ = fs.Parse(args)
		return nil, errUsage
	}

	if fs.Lookup("config") != nil {
		path, ok := given["config"]
		if !ok {
			path = getenv(envName("config"))
		}
		if path != "" {
			if err := applyFile(fs, path, src); err != nil {
				return nil, err
			}
		}
	}

	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		v := getenv(name)
		if v == "" || envErr != nil {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = fmt.Errorf("%s=%q: want %s", name, v, wantOf(f, err))
			return
		}
		src[f.Name] = source{kind: fromEnv, where: name}
	})
	if envErr != nil {
		fmt.Fprintln(fs.Output(), envErr)
		return nil, errUsage
	}

	if err := fs.Parse(args); err != nil {
		return nil, errUsage
	}
	for name := range given {
		src[name] = source{kind: fromFlag}
	}
	return src, nil
}

// commandLine returns the flags args give, each with its last value, by
// parsing args exactly as fs.Parse would into stand-in values.
func commandLine(fs *flag.FlagSet, args []string) (map[string]string, error) {
	shadow := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	shadow.SetOutput(io.Discard)
	fs.VisitAll(func(f *flag.Flag) {
		shadow.Var(&standIn{isBool: isBoolFlag(f)}, f.Name, f.Usage)
	})
	if err := shadow.Parse(args); err != nil {
		return nil, err
	}
	given := make(map[string]string)
	shadow.Visit(func(f *flag.Flag) { given[f.Name] = f.Value.String() })
	return given, nil
}

// standIn takes any value; it stands in for a real flag in commandLine.
type standIn struct {
	isBool bool
	value  string
}

func (s *standIn) String() string     { return s.value }
func (s *standIn) Set(v string) error { s.value = v; return nil }
func (s *standIn) IsBoolFlag() bool   { return s.isBool }

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// applyFile sets the flags the YAML config file at path names. Its keys are
// flag names and its values scalars; an unknown key, a key given twice, or a
// value the flag does not take is an error naming the file, line and key.
func applyFile(fs *flag.FlagSet, path string, src sources) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("config file %s: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: want a mapping of flag names to values, like \"http: 127.0.0.1:8080\"", path, root.Line)
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		at := fmt.Sprintf("%s:%d", path, k.Line)
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s: keys must be flag names", at)
		}
		name := k.Value
		f := fs.Lookup(name)
		switch {
		case name == "config":
			return fmt.Errorf("%s: config: a config file cannot name another config file", at)
		case f == nil:
			if near := closest(fs, name); near != "" {
				return fmt.Errorf("%s: unknown key %q (did you mean %q?)", at, name, near)
			}
			return fmt.Errorf("%s: unknown key %q (the keys are the flag names of %s --help)", at, name, fs.Name())
		}
		if line, dup := seen[name]; dup {
			return fmt.Errorf("%s: %s: given twice (first on line %d)", at, name, line)
		}
		seen[name] = k.Line
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		switch {
		case v.Kind != yaml.ScalarNode:
			return fmt.Errorf("%s: %s: want %s, got a list or mapping", at, name, wantOf(f, nil))
		case v.Tag == "!!null":
			return fmt.Errorf("%s: %s: no value (write \"\" for an empty one)", at, name)
		}
		if err := fs.Set(name, v.Value); err != nil {
			return fmt.Errorf("%s: %s: want %s, got %q", at, name, wantOf(f, err), v.Value)
		}
		src[name] = source{kind: fromFile, where: path, line: k.Line}
	}
	return nil
}

// wantOf says what values flag f takes, for an error message; err is the
// error its Set returned, if any.
func wantOf(f *flag.Flag, err error) string {
	if isBoolFlag(f) {
		return "true or false"
	}
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case time.Duration:
			return "a duration like 2s or 1m30s"
		case int, int64:
			return "an integer"
		case uint, uint64:
			return "a whole number >= 0"
		case float64:
			return "a number"
		case string:
			return "a string"
		}
	}
	if err != nil {
		return fmt.Sprintf("a valid value (%v)", err)
	}
	return "a single value"
}

// closest returns the flag name of fs nearest to key, or "" if none is near.
func closest(fs *flag.FlagSet, key string) string {
	norm := strings.ReplaceAll(strings.ToLower(strings.TrimLeft(key, "-")), "_", "-")
	best, bestD := "", 0
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		d := editDistance(norm, f.Name)
		if best == "" || d < bestD {
			best, bestD = f.Name, d
		}
	})
	if best == "" || bestD > max(2, len(best)/3) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// describe names flag name of fs as the user set it, with its value
// (secrets redacted), for an error message: "--replicas=7",
// "FLASHGATE_REPLICAS=7", "flashgate.yaml:3: replicas: 7" or
// "--replicas=1 (default)".
func describe(fs *flag.FlagSet, src sources, name string) string {
	v := ""
	if f := fs.Lookup(name); f != nil {
		v, _ = redact(name, f.Value.String())
	}
	q := v
	if v == "" || strings.ContainsAny(v, " \t\n\"'") {
		q = strconv.Quote(v)
	}
	s := src[name]
	switch s.kind {
	case fromFlag:
		return "--" + name + "=" + q
	case fromEnv:
		return s.where + "=" + q
	case fromFile:
		return fmt.Sprintf("%s:%d: %s: %s", s.where, s.line, name, q)
	}
	return "--" + name + "=" + q + " (default)"
}
