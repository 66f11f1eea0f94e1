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
  macula nodes   [flags]   show the view of the node on this host (or of any node's --http)
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
	if cmd == "help" && len(rest) > 0 { // "macula help run" = "macula run -h"
		cmd, rest = rest[0], []string{"-h"}
	}
	// Commands write errors to stderr; their -h help goes to stdout.
	errw := &cmdStderr{Writer: stderr, stdout: stdout}
	var err error
	switch cmd {
	case "run":
		err = cmdRun(ctx, rest, stdout, errw)
	case "demo":
		err = cmdDemo(ctx, rest, stdout, errw)
	case "nodes":
		err = cmdNodes(ctx, rest, stdout, errw)
	case "doctor":
		err = cmdDoctor(ctx, rest, stdout, errw)
	case "bench":
		err = cmdBench(ctx, rest, stdout, errw)
	case "version", "--version", "-version":
		fs := newFlagSet("version", errw)
		if err = parseFlags(fs, rest); err == nil {
			fmt.Fprintln(stdout, "macula", version())
		}
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

// cmdStderr is the stderr realMain hands to a command; newFlagSet finds the
// command's stdout in it, so that -h prints the help on stdout (exit 0)
// while a bad flag prints its error on stderr (exit 2).
type cmdStderr struct {
	io.Writer
	stdout io.Writer
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("macula "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n", fs.Name())
		if hasFlags(fs) {
			fmt.Fprintf(fs.Output(), "\nFlags:\n")
			printFlags(fs)
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// printFlags is flag.PrintDefaults with the spelling the docs use: --name
// for long flags, -x for one-letter ones (both work).
func printFlags(fs *flag.FlagSet) {
	w := fs.Output()
	fs.VisitAll(func(f *flag.Flag) {
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		arg, help := flag.UnquoteUsage(f)
		if arg != "" {
			arg = " " + arg
		}
		fmt.Fprintf(w, "  %s%s%s\n", dash, f.Name, arg)
		help = strings.ReplaceAll(help, "\n", "\n    \t")
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			help += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "    \t%s\n", help)
	})
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard) // the errors are reported once, by realMain
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		if cs, ok := out.(*cmdStderr); ok {
			fs.SetOutput(cs.stdout)
		}
		fs.Usage()
		return err
	}
	if err != nil {
		return usageError{fmt.Errorf("%w (%q lists the flags)", err, fs.Name()+" -h")}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	return nil
}
