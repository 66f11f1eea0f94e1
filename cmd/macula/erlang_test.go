//go:build unix

package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/macula-io/cluster/internal/erltest"
)

// TestRunErlang: `macula run --erlang` next to an Erlang node running Macula's gossip (lo
// only): both report nodeup, and killing the macula process gives nodedown on the Erlang side
// at once.
func TestRunErlang(t *testing.T) {
	erltest.NeedErlang(t)
	epmd := erltest.StartEPMD(t)
	port := testUDPPort(t)
	const goName, erlName = "go@127.0.0.1", "erl1@127.0.0.1"
	e := erltest.Start(t, erlName, "test-cookie", epmd, port, 100*time.Millisecond)
	p := startRunEnv(t, []string{fmt.Sprintf("ERL_EPMD_PORT=%d", epmd)}, "--erlang", "--interface", "lo",
		"--port", fmt.Sprint(port), "--interval", "100", "--name", goName, "--listen", "127.0.0.1:0")
	up := p.waitFor(t, "nodeup "+erlName, is("nodeup", erlName))
	if up["protocol"] != "erlang" {
		t.Fatalf("nodeup = %v, want protocol erlang", up)
	}
	e.WaitLine("nodeup "+goName+" ", 10*time.Second)

	killed := time.Now()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	down := erltest.Stamp(t, e.WaitLine("nodedown "+goName+" ", 10*time.Second))
	t.Logf("Erlang nodedown %v after SIGKILL of macula run", down.Sub(killed))
}
