package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/macula-io/cluster/internal/envx"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadSecretFile(t *testing.T) {
	for _, tc := range []struct{ content, want, err string }{
		{"s3cret\n", "s3cret", ""},
		{"s3cret\r\n", "s3cret", ""},
		{"s3cret", "s3cret", ""},
		{"a b\n\n", "a b", ""},
		{"\n", "", "is empty"},
		{"", "", "is empty"},
		{strings.Repeat("x", envx.MaxSecretFile+1), "", "larger than"},
	} {
		p := writeFile(t, "secret", tc.content)
		got, err := readSecretFile(p)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), p) {
				t.Errorf("%q: err %v, want one naming %s and %q", tc.content, err, p, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.content, got, err, tc.want)
		}
	}
}

// TestRunSecretFiles: a node with --cookie-file and --secret-file (files
// with trailing newlines, as Docker and Kubernetes secrets often have)
// links with a node given the same values as a flag and a variable; the
// flag forms warn, the file forms do not.
func TestRunSecretFiles(t *testing.T) {
	port := fmt.Sprint(testUDPPort(t))
	common := []string{"--interface", "lo", "--port", port, "--interval", "100", "--listen", "127.0.0.1:0", "--link-timeout", "1s"}
	cookieFile := writeFile(t, "cookie", "test-cookie\r\n")
	secretFile := writeFile(t, "secret", "gossip-key\n")
	a := startRun(t, append(common, "--name", "a@127.0.0.1", "--cookie-file", cookieFile, "--secret-file", secretFile)...)
	b := startRun(t, append(common, "--name", "b@127.0.0.1", "--secret", "gossip-key", "--cookie", "test-cookie")...)
	a.waitFor(t, "nodeup b", is("nodeup", "b@127.0.0.1"))
	b.waitFor(t, "nodeup a", is("nodeup", "a@127.0.0.1"))
	b.cmd.Process.Kill()
	<-b.done
	b.cmd.Wait() // stderr is complete (and no longer written) after Wait
	if s := b.stderr.String(); !strings.Contains(s, "--cookie on the command line is readable") || !strings.Contains(s, "--secret on the command line is readable") ||
		!strings.Contains(s, "MACULA_COOKIE_FILE") {
		t.Errorf("no warning for --cookie/--secret on the command line:\n%s", s)
	}
	a.cmd.Process.Kill()
	<-a.done
	a.cmd.Wait()
	if s := a.stderr.String(); strings.Contains(s, "command line is readable") {
		t.Errorf("warning for the file forms:\n%s", s)
	}
}

func TestRunRefusesBadSecretFiles(t *testing.T) {
	empty := writeFile(t, "empty", "\n")
	missing := filepath.Join(t.TempDir(), "missing")
	ok := writeFile(t, "ok", "x\n")
	runRefused(t, []string{"--cookie-file", missing}, nil, "--cookie-file", missing, "no such file")
	runRefused(t, []string{"--cookie-file", empty}, nil, "--cookie-file", empty, "is empty")
	runRefused(t, []string{"--secret-file", empty}, nil, "--secret-file", empty, "is empty")
	runRefused(t, []string{"--secret-file", writeFile(t, "ring", "a,,b\n")}, nil, "--secret-file", "empty secret")
	runRefused(t, []string{"--cookie", "x", "--cookie-file", ok}, nil, "--cookie and --cookie-file")
	runRefused(t, []string{"--cookie="}, nil, "--cookie", "empty value")
	runRefused(t, nil, []string{"MACULA_COOKIE=", "MACULA_COOKIE_FILE=" + missing}, "MACULA_COOKIE_FILE", missing)
	runRefused(t, nil, []string{"MACULA_GOSSIP_SECRET_FILE=" + empty}, "MACULA_GOSSIP_SECRET_FILE", empty, "is empty")
	runRefused(t, nil, []string{"MACULA_COOKIE_FILE=" + ok, "MACULA_COOKIE=y"}, "MACULA_COOKIE and MACULA_COOKIE_FILE")
}
