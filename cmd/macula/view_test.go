package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	cluster "github.com/macula-io/cluster"
)

func report(node string, links ...string) []byte {
	r := linkReport{T: reportType, V: reportVersion, Node: node, Links: []reportLink{}}
	for _, l := range links {
		r.Links = append(r.Links, reportLink{Node: l})
	}
	b, _ := json.Marshal(r)
	return b
}

// TestClusterViewLinks: the view joins the peers' reports into every link
// of the cluster and classifies each pair.
func TestClusterViewLinks(t *testing.T) {
	v := newClusterView(slog.New(slog.DiscardHandler), nil)
	v.receive("b", report("b", "a", "c"))
	v.receive("c", report("c", "a")) // c does not see b: asymmetric
	v.receive("d", report("d", "a")) // nobody but a sees d: b-d, c-d missing
	v.receive("e", report("e"))      // e reports, a does not link it: a-e missing
	got := v.build(time.Now(), cluster.Member{Node: "a"},
		[]cluster.Member{{Node: "b"}, {Node: "c"}, {Node: "d"}},
		[]cluster.Peer{{Node: "f", Addr: "127.0.0.1:9"}},
		[]recentMember{{Node: "f", Reason: "timeout"}, {Node: "g", Reason: "left"}}, nil)
	states := map[string]string{}
	for _, l := range got.Links {
		states[l.A+"-"+l.B] = l.State
	}
	want := map[string]string{"a-b": "ok", "a-c": "ok", "a-d": "ok", "a-e": "missing",
		"b-c": "asymmetric", "b-d": "missing", "c-d": "missing", "b-e": "missing", "c-e": "missing", "d-e": "missing"}
	for k, w := range want {
		if states[k] != w {
			t.Errorf("link %s: %q, want %q", k, states[k], w)
		}
	}
	if len(states) != len(want) { // no link to the down nodes f, g
		t.Errorf("links %v, want %v", states, want)
	}
	nodes := map[string]viewNode{}
	for _, n := range got.Nodes {
		nodes[n.Node] = n
	}
	for n, st := range map[string]string{"a": "self", "b": "up", "e": "unknown", "f": "down", "g": "left"} {
		if nodes[n].State != st {
			t.Errorf("node %s: state %q, want %q", n, nodes[n].State, st)
		}
	}
	if nodes["f"].Addr != "127.0.0.1:9" || nodes["f"].Reason != "timeout" || nodes["b"].Sees != 2 || !nodes["b"].Reporting {
		t.Errorf("nodes %+v", nodes)
	}
	// A report older than reportStale counts as missing.
	v.mu.Lock()
	r := v.reports["d"]
	r.at = time.Now().Add(-2 * reportStale)
	v.reports["d"] = r
	v.mu.Unlock()
	for _, l := range v.build(time.Now(), cluster.Member{Node: "a"}, []cluster.Member{{Node: "d"}}, nil, nil, nil).Links {
		if l.A == "a" && l.B == "d" && l.BA != "unknown" {
			t.Errorf("stale report still counts: %+v", l)
		}
	}
	v.event(cluster.Event{Kind: cluster.NodeDown, Node: "c"})
	if _, ok := v.reports["c"]; ok {
		t.Error("a node that went down still speaks for its links")
	}
}

// TestClusterViewReceiveBounds: other messages are ignored; spoofed,
// malformed, oversized and too frequent reports are refused and counted.
func TestClusterViewReceiveBounds(t *testing.T) {
	v := newClusterView(slog.New(slog.DiscardHandler), nil)
	v.receive("b", []byte("hello"))
	v.receive("b", []byte(`{"t":"other"}`))
	if v.dropped.Load() != 0 || len(v.reports) != 0 {
		t.Fatalf("foreign messages: dropped %d, reports %d", v.dropped.Load(), len(v.reports))
	}
	big := linkReport{T: reportType, V: 1, Node: "b"}
	for range maxReportLinks + 1 {
		big.Links = append(big.Links, reportLink{Node: "x"})
	}
	tooMany, _ := json.Marshal(big)
	for _, bad := range [][]byte{
		report("c", "a"),                     // b speaks for c
		[]byte(`{"t":"macula.links","v":1,`), // malformed
		[]byte(`{"t":"macula.links","v":0,"node":"b"}`),
		tooMany,
		append([]byte("{"), make([]byte, maxReportBytes)...),
	} {
		v.receive("b", bad)
	}
	if v.dropped.Load() != 5 || len(v.reports) != 0 {
		t.Fatalf("bad reports: dropped %d, reports %v", v.dropped.Load(), v.reports)
	}
	// Requests are queued for the run loop, at most requestQueue of them.
	for range requestQueue + 3 {
		v.receive("b", []byte(`{"t":"macula.links.request","v":1}`))
	}
	if len(v.requests) != requestQueue || v.dropped.Load() != 5+3 {
		t.Fatalf("requests: queued %d, dropped %d", len(v.requests), v.dropped.Load())
	}
	v.dropped.Store(5)
	v.receive("b", report("b", "a"))
	v.receive("b", report("b")) // too soon after the first
	if v.dropped.Load() != 6 || len(v.reports["b"].Links) != 1 {
		t.Fatalf("rate limit: dropped %d, report %+v", v.dropped.Load(), v.reports["b"])
	}
}

// TestEventsOutliveWriteTimeout: an /events stream keeps delivering after
// the server's WriteTimeout, which would cut an ordinary response.
func TestEventsOutliveWriteTimeout(t *testing.T) {
	ui := &webUI{view: newClusterView(slog.New(slog.DiscardHandler), nil), hub: newEventHub()}
	ui.hub.publish(cluster.Event{Kind: cluster.NodeUp, Node: "old@h", Time: time.Now()})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", ui.serveEvents)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, WriteTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond}
	go srv.Serve(ln)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ln.Addr().String()+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				lines <- sc.Text()
			}
		}
	}()
	if l := <-lines; !strings.Contains(l, `"node":"old@h"`) {
		t.Fatalf("backlog: %q", l)
	}
	time.Sleep(600 * time.Millisecond) // three write timeouts
	ui.hub.publish(cluster.Event{Kind: cluster.NodeDown, Node: "new@h", Reason: "timeout", Time: time.Now()})
	select {
	case l, ok := <-lines:
		if !ok || !strings.Contains(l, `"event":"nodedown"`) || !strings.Contains(l, `"reason":"timeout"`) {
			t.Fatalf("after the write timeout: %q (open %v)", l, ok)
		}
	case <-ctx.Done():
		t.Fatal("no event after the write timeout")
	}
}

// chromium finds Debian's headless browser: under CI=true it must be
// there (.ci/run installs it); elsewhere the browser test skips.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but no chromium: .ci/run installs it (apt-get install chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium); skipping the browser test of the cluster page")
	return ""
}

// browse runs the headless browser on url with extra flags (--dump-dom,
// --screenshot=...) and returns its stdout.
func browse(t *testing.T, bin, profile, url string, flags ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--disable-extensions", "--user-data-dir=" + profile, "--window-size=1280,900"}, flags...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, stderr.String())
	}
	return string(out)
}

// artifactDir is where the browser test keeps its screenshots:
// $MACULA_TEST_ARTIFACTS, or macula-test-artifacts in the temp directory.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("MACULA_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "macula-test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

var rowRE = regexp.MustCompile(`<tr class="(node|link) (?:state|link)-([a-z]+)" data-(?:node="([^"]*)"|a="([^"]*)" data-b="([^"]*)")`)

// pageRows parses the rendered DOM: node -> state, "a b" -> link state.
func pageRows(dom string) (nodes, links map[string]string) {
	nodes, links = map[string]string{}, map[string]string{}
	for _, m := range rowRE.FindAllStringSubmatch(dom, -1) {
		if m[1] == "node" {
			nodes[m[3]] = m[2]
		} else {
			links[m[4]+" "+m[5]] = m[2]
		}
	}
	return nodes, links
}

// TestClusterPageInBrowser loads the page of a 3-node cluster (three
// `macula run` on 127.0.0.1 joined by static addresses, nothing sent on
// any interface) in headless chromium: 3 nodes and 3 links, then one node
// is killed and the page shows it down.
func TestClusterPageInBrowser(t *testing.T) {
	bin := chromium(t)
	common := []string{"--strategy", "static", "--listen", "127.0.0.1:0", "--link-timeout", "1s", "--interface", "lo"}
	a := startRun(t, append(common, "--name", "a@127.0.0.1", "--tag", "role=lb")...)
	ra := a.waitFor(t, "a ready", is("ready", ""))
	b := startRun(t, append(common, "--name", "b@127.0.0.1", "--tag", "role=web", "--nodes", ra["addr"].(string))...)
	rb := b.waitFor(t, "b ready", is("ready", ""))
	c := startRun(t, append(common, "--name", "c@127.0.0.1", "--nodes", ra["addr"].(string)+","+rb["addr"].(string))...)
	rc := c.waitFor(t, "c ready", is("ready", ""))
	base := "http://" + ra["control"].(string)

	// Wait until a has every report (the page then shows 3 ok links).
	waitCluster := func(what string, ok func(clusterJSON) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		var last clusterJSON
		for time.Now().Before(deadline) {
			resp, err := http.Get(base + "/cluster")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if json.Unmarshal(b, &last) == nil && ok(last) {
					return
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for %s; /cluster %+v", what, last)
	}
	waitCluster("3 ok links", func(v clusterJSON) bool {
		n := 0
		for _, l := range v.Links {
			if l.State == "ok" {
				n++
			}
		}
		return len(v.Nodes) == 3 && n == 3
	})

	dir, profile := artifactDir(t), t.TempDir()
	dom := browse(t, bin, profile, base+"/", "--dump-dom")
	nodes, links := pageRows(dom)
	if len(nodes) != 3 || nodes["a@127.0.0.1"] != "self" || nodes["b@127.0.0.1"] != "up" || nodes["c@127.0.0.1"] != "up" {
		t.Fatalf("page nodes %v, want a self, b and c up\n%s", nodes, dom)
	}
	if len(links) != 3 || links["a@127.0.0.1 b@127.0.0.1"] != "ok" || links["b@127.0.0.1 c@127.0.0.1"] != "ok" {
		t.Fatalf("page links %v, want 3 ok\n%s", links, dom)
	}
	for _, tag := range []string{`<span class="tag">role=lb</span>`, `<span class="tag">role=web</span>`} {
		if !strings.Contains(dom, tag) {
			t.Errorf("the page lacks %s", tag)
		}
	}
	shot := filepath.Join(dir, "cluster-page-3-nodes.png")
	browse(t, bin, profile, base+"/", "--screenshot="+shot)
	t.Logf("screenshot: %s", shot)

	c.cmd.Process.Kill()
	// c is down, and b's report (asked for again) no longer lists it.
	waitCluster("c down", func(v clusterJSON) bool {
		if len(v.Links) != 1 {
			return false
		}
		for _, n := range v.Nodes {
			if n.Node == "c@127.0.0.1" {
				return n.State == "down"
			}
		}
		return false
	})
	dom = browse(t, bin, profile, base+"/", "--dump-dom")
	nodes, links = pageRows(dom)
	if nodes["c@127.0.0.1"] != "down" || nodes["b@127.0.0.1"] != "up" || links["a@127.0.0.1 b@127.0.0.1"] != "ok" || len(links) != 1 {
		t.Fatalf("after killing c: nodes %v links %v\n%s", nodes, links, dom)
	}
	if !strings.Contains(dom, "<td>"+rc["addr"].(string)+"</td>") {
		t.Errorf("the down node's address is not shown\n%s", dom)
	}
	if !strings.Contains(dom, `class="nodedown"`) {
		t.Errorf("the events list shows no nodedown\n%s", dom)
	}
	shot = filepath.Join(dir, "cluster-page-1-down.png")
	browse(t, bin, profile, base+"/", "--screenshot="+shot)
	t.Logf("screenshot: %s", shot)
}

// TestRunTags: --tag reaches the peers: in their nodeup JSON events, in
// /nodes, in `macula nodes` (column and --tag filter) and on the page.
func TestRunTags(t *testing.T) {
	common := []string{"--strategy", "static", "--listen", "127.0.0.1:0", "--interface", "lo"}
	a := startRun(t, append(common, "--name", "a@127.0.0.1", "--tag", "role=db")...)
	ra := a.waitFor(t, "a ready", is("ready", ""))
	b := startRun(t, append(common, "--name", "b@127.0.0.1", "--tag", "role=web", "--tag", "version=1.2", "--nodes", ra["addr"].(string))...)
	b.waitFor(t, "b ready", is("ready", ""))
	up := a.waitFor(t, "a sees b", is("nodeup", "b@127.0.0.1"))
	if tags, _ := up["tags"].(map[string]any); tags["role"] != "web" || tags["version"] != "1.2" {
		t.Fatalf("nodeup %v", up)
	}
	if tags, _ := b.waitFor(t, "b sees a", is("nodeup", "a@127.0.0.1"))["tags"].(map[string]any); tags["role"] != "db" {
		t.Fatalf("b's nodeup tags %v", tags)
	}
	ctl := ra["control"].(string)
	var out, errb strings.Builder
	if code := realMain([]string{"nodes", "--http", ctl, "--tag", "role=web"}, &out, &errb); code != 0 {
		t.Fatalf("nodes --tag: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "role=web,version=1.2") || !strings.Contains(out.String(), "tags role=db") {
		t.Errorf("nodes --tag role=web:\n%s", out.String())
	}
	out.Reset()
	realMain([]string{"nodes", "--http", ctl, "--tag", "role=cache"}, &out, &errb)
	if strings.Contains(out.String(), "b@127.0.0.1") || !strings.Contains(out.String(), "0 connected") {
		t.Errorf("nodes --tag role=cache:\n%s", out.String())
	}
	resp, err := http.Get("http://" + ctl + "/nodes")
	if err != nil {
		t.Fatal(err)
	}
	var v nodesView
	json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if v.Self.Tags["role"] != "db" || len(v.Connected) != 1 || v.Connected[0].Tags["version"] != "1.2" {
		t.Errorf("/nodes %+v", v)
	}
	resp, err = http.Get("http://" + ctl + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `"role":"web"`) {
		t.Errorf("the page's data lacks b's tags")
	}
}

// FuzzClusterViewReceive: any mesh message is ignored, refused or kept as
// a bounded report; never a panic.
func FuzzClusterViewReceive(f *testing.F) {
	f.Add(report("b", "a", "c"))
	f.Add([]byte(`{"t":"macula.links","v":2,"node":"b","links":[{"node":"a"}],"tags":{"k":"v"},"new":1}`))
	f.Add([]byte(`{"t":"macula.links"`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		v := newClusterView(slog.New(slog.DiscardHandler), nil)
		v.receive("b", msg)
		if r, ok := v.reports["b"]; ok && (len(r.Links) > maxReportLinks || r.Node != "b") {
			t.Fatalf("kept %+v", r)
		}
		v.build(time.Now(), cluster.Member{Node: "a"}, nil, nil, nil, nil)
	})
}
