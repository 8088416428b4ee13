package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

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

// parse applies FLASHGATE_* variables, then the command line (which wins).
func parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" && err == nil {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %v", envName(f.Name), v, serr)
			}
		}
	})
	if err != nil {
		fmt.Fprintln(fs.Output(), err)
		return errUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errUsage
		}
		return errUsage
	}
	return nil
}
