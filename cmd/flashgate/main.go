// Command flashgate runs a limited-stock sale gate: shoppers get a purchase
// token and buy, nothing is oversold, and every decision is an event an
// auditor can replay. See `flashgate help`.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `flashgate — a gate for limited-stock sales

Usage:
  flashgate serve  [flags]              run the service (embedded NATS by default)
  flashgate sale   create|get|list ...  manage sales through the admin API
  flashgate limits list|set|reset ...   rate-limit policies, changed live on every process
  flashgate solve  [CHALLENGE DIFF]     solve a proof-of-work puzzle (JSON on stdin) for curl
  flashgate audit  [flags]              replay the events and check every invariant
  flashgate events tail|export ...      follow or write out the event history
  flashgate backup --out FILE           back up a whole installation (stream, buckets, keys)
  flashgate restore --in FILE           restore a backup into a fresh data directory
  flashgate config print [flags]        show the effective serve configuration, secrets redacted
  flashgate bench  [flags]              load-test a server: tokens, purchase, queue or mixed (with abusive clients)
  flashgate cluster status [--json]     the processes, the sales each writes for, lease ages, view lag
  flashgate orders dlq list|retry ...   orders the fulfilment gave up: list them, send them back
  flashgate provider fake [flags]       a stand-in fulfilment provider with a carrier's token quota, for development
  flashgate version

Every flag can also be set as an environment variable: --session-rate is
FLASHGATE_SESSION_RATE. serve also reads a YAML config file (--config FILE,
keys = flag names). Precedence: command line > environment > config file >
default. Run 'flashgate <command> --help' for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], getenv, stdout, stderr)
	case "sale":
		err = sale(ctx, args[1:], getenv, stdout, stderr)
	case "solve":
		err = solveCmd(ctx, args[1:], stdinReader, stdout, stderr)
	case "cluster":
		err = clusterCmd(ctx, args[1:], getenv, stdout, stderr)
	case "orders":
		err = ordersCmd(ctx, args[1:], getenv, stdout, stderr)
	case "provider":
		err = providerCmd(ctx, args[1:], getenv, stdout, stderr)
	case "limits":
		err = limitsCmd(ctx, args[1:], getenv, stdout, stderr)
	case "audit":
		return auditCmd(ctx, args[1:], getenv, stdout, stderr)
	case "events":
		err = eventsCmd(ctx, args[1:], getenv, stdout, stderr)
	case "backup":
		err = backupCmd(ctx, args[1:], getenv, stdout, stderr)
	case "restore":
		err = restoreCmd(ctx, args[1:], getenv, stdout, stderr)
	case "config":
		err = configCmd(ctx, args[1:], getenv, stdout, stderr)
	case "bench":
		err = bench(ctx, args[1:], getenv, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "flashgate", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "flashgate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err == errUsage {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "flashgate %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
