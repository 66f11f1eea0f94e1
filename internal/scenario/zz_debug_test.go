package scenario

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDebug50(t *testing.T) {
	if os.Getenv("DEBUG50") == "" {
		t.Skip()
	}
	cfg := Config{Bin: "/tmp/scn-macula", Hosts: 50, LinkTimeout: 5 * time.Second, Interval: 1500 * time.Millisecond}.withDefaults()
	h := &harness{cfg: cfg, res: &Result{}, name: "dbg"}
	defer h.close()
	if err := h.newLab(50, false); err != nil {
		t.Fatal(err)
	}
	var nodes []*node
	for _, host := range h.lab.Hosts {
		nodes = append(nodes, h.defineNode(host, "", 0, "--log-level", "debug"))
	}
	h.startAll(t.Context(), nodes)
	_, err := h.waitMesh(t.Context(), nodes, nodes, 8*time.Second)
	t.Logf("err %v", err)
	for _, n := range nodes {
		v := newView()
		for _, e := range events(n.proc()) {
			v.apply(e)
		}
		if len(v.up) < 49 && n.host.Index%10 == 0 {
			t.Logf("%s: up=%d", n.name, len(v.up))
		}
	}
	for _, i := range []int{0, 49} {
		sh := func(args ...string) string {
			out, _ := nodes[i].host.Command(t.Context(), args[0], args[1:]...).CombinedOutput()
			return string(out)
		}
		t.Logf("nstat %d:\n%s", i, grepNZ(sh("nstat", "-az")))
		t.Logf("neigh %d:\n%s", i, grepNot(sh("ip", "neigh"), "REACHABLE"))
		t.Logf("link %d:\n%s", i, sh("ip", "-s", "link", "show", "eth0"))
		nodes[i].proc().Signal(syscall.SIGQUIT)
	}
	time.Sleep(500 * time.Millisecond)
	os.WriteFile("/tmp/dbg-n0.err", []byte(nodes[0].proc().Stderr()), 0o644)
	os.WriteFile("/tmp/dbg-n49.err", []byte(nodes[49].proc().Stderr()), 0o644)
	var b strings.Builder
	for _, l := range nodes[49].proc().Events() {
		fmt.Fprintf(&b, "%s %s\n", stamp(l.At), l.Raw)
	}
	os.WriteFile("/tmp/dbg-n49.out", []byte(b.String()), 0o644)
}

func grepNZ(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[1] != "0" {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func grepNot(s, not string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, not) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
