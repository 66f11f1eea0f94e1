//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
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
	e := erltest.Start(t, erltest.Options{Name: erlName, Cookie: "test-cookie", EPMDPort: epmd, GossipPort: port})
	p := startRunEnv(t, []string{fmt.Sprintf("ERL_EPMD_PORT=%d", epmd)}, "--erlang", "--interface", "lo",
		"--port", fmt.Sprint(port), "--interval", "100", "--name", goName, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	up := p.waitFor(t, "nodeup "+erlName, is("nodeup", erlName))
	if up["protocol"] != "erlang" {
		t.Fatalf("nodeup = %v, want protocol erlang", up)
	}
	e.WaitLine("nodeup "+goName+" ", 10*time.Second)
	ready := p.waitFor(t, "ready", is("ready", ""))
	resp, err := http.Get("http://" + ready["http"].(string) + "/nodes")
	if err != nil {
		t.Fatal(err)
	}
	var v nodesView
	err = json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if err != nil || len(v.Connected) != 1 || !v.Connected[0].Erlang || v.Connected[0].Node != erlName || v.Connected[0].Outbound != nil {
		t.Fatalf("/nodes: %v %+v, want %s connected with erlang set", err, v.Connected, erlName)
	}
	out, err := exec.Command(binary, "nodes", "--http", ready["http"].(string)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "erlang") {
		t.Fatalf("macula nodes: %v\n%s", err, out)
	}

	killed := time.Now()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	down := erltest.Stamp(t, e.WaitLine("nodedown "+goName+" ", 10*time.Second))
	t.Logf("Erlang nodedown %v after SIGKILL of macula run", down.Sub(killed))
}
