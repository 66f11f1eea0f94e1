// Command macula forms and inspects clusters: see `macula help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
)

const usage = `macula: zero-config cluster formation (Macula gossip, in Go)

Usage:
  macula run     [flags]   run a node: discover peers, keep a mesh, print events
  macula demo    [flags]   start a few nodes on loopback and show a cluster forming
  macula nodes   [flags]   show a running node's view (through its --http address)
  macula doctor  [flags]   check this host's network for gossip and mesh, with fixes
  macula bench   [flags]   multi-host benchmark in network namespaces (root)
  macula version           print the module version, commit and Go version

Run "macula COMMAND -h" for a command's flags. Short flags: -h is help
everywhere, -v is verbose (demo); the version is "macula version".
`

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "run":
		err = cmdRun(ctx, rest, stdout, stderr)
	case "demo":
		err = cmdDemo(ctx, rest, stdout, stderr)
	case "nodes":
		err = cmdNodes(ctx, rest, stdout, stderr)
	case "doctor":
		err = cmdDoctor(ctx, rest, stdout, stderr)
	case "bench":
		err = cmdBench(ctx, rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "macula", version())
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "macula: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "macula %s: %v\n", cmd, err)
		return 2
	}
	var ce checkFailed
	if errors.As(err, &ce) {
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "macula %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// usageError marks a bad command line (exit 2).
type usageError struct{ error }

// checkFailed marks a command that printed its own failure report (exit 1).
type checkFailed struct{ error }

// version describes this binary: the module version (a tag such as v0.2.0
// when installed with "go install ...@v0.2.0", a pseudo-version for an
// untagged commit, "devel" for a build from a clone), the VCS commit when the
// build stamped one (builds inside a git clone do), and the toolchain.
func version() string {
	return versionOf(debug.ReadBuildInfo())
}

func versionOf(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return "unknown (built without module information)"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, at string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	out := v
	if bi.Main.Path != "" {
		out += " (" + bi.Main.Path + ")"
	}
	if rev != "" {
		out += " commit " + rev
		if at != "" {
			out += " " + at
		}
		if modified {
			out += " +local changes"
		}
	}
	return out + " " + bi.GoVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
}

// logFlags are shared by every command.
type logFlags struct {
	format string
	level  string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", "text", "log format on stderr: text or json")
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(l.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", l.format)}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("macula "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	return nil
}
