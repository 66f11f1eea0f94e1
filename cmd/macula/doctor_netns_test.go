//go:build linux

package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/macula-io/cluster/internal/netlab"
)

// runDoctor runs `macula doctor ARGS` in host h and returns its output and
// exit status.
func runDoctor(t *testing.T, h *netlab.Host, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := h.Command(ctx, binary, append([]string{"doctor"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "MACULA_COOKIE=", "MACULA_GOSSIP_SECRET=", "CLUSTER_SECRET=", "RELEASE_COOKIE=")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("doctor: %v\n%s", err, out)
	}
	s := string(out)
	// Every fix can be pasted: no placeholder is left in it.
	for _, ph := range []string{":PORT", "IFACE", "{host}", "HOST"} {
		if strings.Contains(s, ph) {
			t.Errorf("doctor output has the placeholder %q:\n%s", ph, s)
		}
	}
	// Every FAIL has a fix.
	for _, block := range strings.Split(s, "\n[")[1:] {
		if strings.HasPrefix(block, "FAIL]") && !strings.Contains(block, "\n       fix: ") {
			t.Errorf("a FAIL without a fix: [%s", block)
		}
	}
	return s, code
}

// startNode runs `macula run` in h with a secret and a cookie.
func startLabNode(t *testing.T, h *netlab.Host, name, secret, cookie string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	args := []string{"run", "--json", "--interface", "eth0", "--interval", "200",
		"--name", name + "@" + h.IP.String(), "--listen", h.IP.String() + ":9100", "--control", "off"}
	if secret != "" {
		args = append(args, "--secret", secret)
	}
	p, err := h.Start(ctx, []string{"MACULA_COOKIE=" + cookie, "MACULA_GOSSIP_SECRET=", "CLUSTER_SECRET="}, binary, args...)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	if _, err := p.WaitFor(wctx, func(l netlab.Line) bool { return l.Event() == "ready" }); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, p.Stderr())
	}
}

// TestDoctorListensAndDials: on a LAN with a good node, a node with
// another gossip secret and one with another cookie, doctor reports the
// nodes it hears, the source that fails the secret, and the node that
// refuses the cookie, each FAIL with a fix naming the host.
func TestDoctorListensAndDials(t *testing.T) {
	lab := netlab.New(t, netlab.Options{Hosts: 5})
	h := lab.Hosts
	startLabNode(t, h[1], "good", "s3cret", "c00kie")
	startLabNode(t, h[2], "badsecret", "other", "c00kie")
	startLabNode(t, h[3], "badcookie", "s3cret", "other")
	startLabNode(t, h[4], "nosecret", "", "c00kie")
	out, code := runDoctor(t, h[0], "--interface", "eth0", "--secret", "s3cret", "--cookie", "c00kie", "--listen-for", "2s")
	for _, want := range []string{
		"[ ok ] send/receive on eth0",
		"[ ok ] nodes heard on eth0",
		"198.18.0.11     good@198.18.0.11:9100  ok",
		"198.18.0.12     badsecret@198.18.0.12:9100  FAILS the secret: wrong signature",
		"[FAIL] gossip secret of 198.18.0.12",
		`fix: run the node at 198.18.0.12 with this host's secret: ssh 198.18.0.12 macula run --secret "s3cret"`,
		"[ ok ] mesh cookie at good@198.18.0.11 (198.18.0.11:9100)",
		"[FAIL] mesh cookie at badcookie@198.18.0.13 (198.18.0.13:9100)",
		"the node refuses this host's cookie",
		`fix: run the node at 198.18.0.13 with this host's cookie: ssh 198.18.0.13 macula run --cookie "c00kie"`,
		"198.18.0.14     nosecret@198.18.0.14:9100  FAILS the secret: unsigned",
		"[FAIL] gossip secret of 198.18.0.14",
		"unsigned (it runs without a secret)",
		"3 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q", want)
		}
	}
	if strings.Contains(out, "mesh cookie at badsecret") || strings.Contains(out, "mesh cookie at nosecret") {
		t.Error("doctor dialled a node that fails the secret")
	}
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if t.Failed() {
		t.Logf("doctor output:\n%s", out)
	}

	// No secret here: the nodes that sign are reported (a node started
	// here would be ignored by them), the one without a secret is fine.
	out, _ = runDoctor(t, h[0], "--interface", "eth0", "--cookie", "c00kie", "--listen-for", "2s")
	for _, want := range []string{
		"198.18.0.11     good@198.18.0.11:9100  signed (this host has no secret)",
		"[FAIL] gossip secret of 198.18.0.11",
		"its heartbeats are signed, this host has no secret",
		"fix: scp 198.18.0.11:.macula.secret ~/.macula.secret && macula doctor --secret-file ~/.macula.secret",
		"[ ok ] mesh cookie at nosecret@198.18.0.14",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("without a secret: output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "gossip secret of 198.18.0.14") {
		t.Errorf("without a secret: the unsigned node is reported:\n%s", out)
	}

	// Files: the fix copies the file.
	dir := t.TempDir()
	os.WriteFile(dir+"/cookie", []byte("c00kie\n"), 0o600)
	out, _ = runDoctor(t, h[0], "--interface", "eth0", "--secret", "s3cret", "--cookie-file", dir+"/cookie", "--listen-for", "2s")
	if want := "fix: run the node at 198.18.0.13 with this host's cookie: scp " + dir + "/cookie 198.18.0.13:" + dir + "/cookie && ssh 198.18.0.13 macula run --cookie-file " + dir + "/cookie"; !strings.Contains(out, want) {
		t.Errorf("cookie file: output lacks %q:\n%s", want, out)
	}
}

// TestDoctorNoRouteDelivers: without a 224.0.0.0/4 route (and without
// --interface), multicast still works, as `macula run` finds: doctor tests
// delivery, reports the missing route as information only and passes.
func TestDoctorNoRouteDelivers(t *testing.T) {
	lab := netlab.New(t, netlab.Options{Hosts: 1})
	h := lab.Hosts[0]
	if out, err := exec.Command("ip", "-n", h.NS, "route", "del", "224.0.0.0/4").CombinedOutput(); err != nil {
		t.Fatalf("ip route del: %v: %s", err, out)
	}
	out, code := runDoctor(t, h, "--secret", "s", "--cookie", "c", "--listen-for", "500ms")
	for _, want := range []string{"[ ok ] multicast route", "the send/receive test below is what counts",
		"[ ok ] send/receive on eth0", "[warn] nodes heard on eth0", "0 failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q", want)
		}
	}
	if code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	if t.Failed() {
		t.Logf("doctor output:\n%s", out)
	}
}

// TestDoctorDeliveryBlocked: a firewall that drops the group's traffic
// fails the send/receive test, with a pasteable rule as the fix.
func TestDoctorDeliveryBlocked(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nft not found (required when CI=true: apt-get install nftables)")
		}
		t.Skip("nft not found: apt-get install nftables")
	}
	lab := netlab.New(t, netlab.Options{Hosts: 1})
	h := lab.Hosts[0]
	for _, rule := range [][]string{
		{"add", "table", "inet", "doctortest"},
		{"add", "chain", "inet", "doctortest", "input1", "{ type filter hook input priority 0 ; }"},
		{"add", "rule", "inet", "doctortest", "input1", "ip", "daddr", "224.0.0.0/4", "drop"},
	} {
		if out, err := h.Command(context.Background(), "nft", rule...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", rule, err, out)
		}
	}
	out, code := runDoctor(t, h, "--interface", "eth0", "--secret", "s", "--cookie", "c", "--listen-for", "0")
	for _, want := range []string{"[FAIL] send/receive on eth0 (230.1.1.251:45892)",
		"fix: iptables -I INPUT -i eth0 -p udp -d 230.1.1.251 --dport 45892 -j ACCEPT"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q", want)
		}
	}
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if t.Failed() {
		t.Logf("doctor output:\n%s", out)
	}
}
