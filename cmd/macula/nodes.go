package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/macula-io/cluster/internal/envx"
)

func cmdNodes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("nodes", stderr)
	addr := fs.String("http", defaultControl, "where the node serves its view: its --control address (the default finds the node on this host) or its --http host:port")
	jsonOut := fs.Bool("json", false, "print the raw JSON view")
	watch := fs.Bool("watch", false, "keep watching: print the view again whenever membership changes (Ctrl-C stops)")
	every := fs.String("interval", "1s", "--watch: how often to ask, ms or Go duration")
	var tagF tagFlag
	fs.Var(&tagF, "tag", "only connected members with this tag, key=value; repeat: all of them")
	status := fs.String("status", "", "only members in this state: up (connected), down (went down, not by leaving), left (left gracefully), discovered (found, not connected)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch *status {
	case "", "up", "down", "left", "discovered":
	default:
		return usageError{fmt.Errorf("--status %q: want up, down, left or discovered", *status)}
	}
	want, err := parseTags(tagF.list)
	if err != nil {
		return usageError{fmt.Errorf("--tag %w", err)}
	}
	interval, err := envx.ParseDuration(*every)
	if err != nil || interval < 100*time.Millisecond {
		return usageError{fmt.Errorf("--interval %q: want milliseconds or a Go duration of at least 100ms", *every)}
	}
	url := *addr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	url = strings.TrimSuffix(url, "/") + "/nodes"
	if !*watch {
		body, v, err := fetchNodes(ctx, url, *addr)
		if err != nil {
			return err
		}
		if *jsonOut {
			_, err := stdout.Write(body)
			return err
		}
		printNodes(stdout, filterTags(filterView(v, *status), want), time.Now())
		return nil
	}
	last := "\x00" // matches no key: the first view is always printed
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		body, v, err := fetchNodes(ctx, url, *addr)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			if key := "error: " + err.Error(); key != last {
				fmt.Fprintf(stdout, "--- %s: %v\n", time.Now().Format("15:04:05"), err)
				last = key
			}
		default:
			v = filterTags(filterView(v, *status), want)
			if key := membershipKey(v); key != last {
				last = key
				if *jsonOut {
					stdout.Write(body)
				} else {
					fmt.Fprintf(stdout, "--- %s\n", time.Now().Format("15:04:05"))
					printNodes(stdout, v, time.Now())
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// fetchNodes asks a node for its /nodes view.
func fetchNodes(ctx context.Context, url, addr string) ([]byte, nodesView, error) {
	var v nodesView
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, v, usageError{fmt.Errorf("--http %q: %w", addr, err)}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, v, fmt.Errorf("no node answering at %s (is \"macula run\" running on this host? it serves its view on %s unless --control says otherwise; for a node elsewhere give its --http address): %w",
			addr, defaultControl, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, v, fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, v, fmt.Errorf("%s: %s", url, resp.Status)
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, v, fmt.Errorf("%s: not a macula /nodes answer: %w", url, err)
	}
	return body, v, nil
}

// filterTags keeps the connected members that have every tag of want
// (and their discovered rows); members not connected have no known tags.
func filterTags(v nodesView, want map[string]string) nodesView {
	if len(want) == 0 {
		return v
	}
	keep := map[string]bool{}
	out := v
	out.Connected, out.Discovered, out.Recent = []nodeView{}, []nodeView{}, []recentMember{}
	for _, c := range v.Connected {
		if matchTags(c.Tags, want) {
			keep[c.Node] = true
			out.Connected = append(out.Connected, c)
		}
	}
	for _, d := range v.Discovered {
		if keep[d.Node] {
			out.Discovered = append(out.Discovered, d)
		}
	}
	return out
}

// filterView keeps the members in one state: up, down, left, discovered.
func filterView(v nodesView, status string) nodesView {
	if status == "" {
		return v
	}
	up := map[string]bool{}
	for _, c := range v.Connected {
		up[c.Node] = true
	}
	out := v
	out.Discovered, out.Connected, out.Recent = []nodeView{}, []nodeView{}, []recentMember{}
	switch status {
	case "up":
		out.Connected = v.Connected
		for _, d := range v.Discovered {
			if up[d.Node] {
				out.Discovered = append(out.Discovered, d)
			}
		}
	case "discovered":
		for _, d := range v.Discovered {
			if !up[d.Node] {
				out.Discovered = append(out.Discovered, d)
			}
		}
	case "down", "left":
		for _, r := range v.Recent {
			if (r.Reason == "left") == (status == "left") {
				out.Recent = append(out.Recent, r)
			}
		}
	}
	return out
}

// membershipKey changes when membership does (not when only times do).
func membershipKey(v nodesView) string {
	var b strings.Builder
	for _, d := range v.Discovered {
		fmt.Fprintf(&b, "d %s %s|", d.Node, d.Addr)
	}
	for _, c := range v.Connected {
		fmt.Fprintf(&b, "c %s %s %d %s|", c.Node, c.Addr, c.Incarnation, formatTags(c.Tags))
	}
	for _, r := range v.Recent {
		fmt.Fprintf(&b, "r %s %s|", r.Node, r.Reason)
	}
	return b.String()
}

func printNodes(w io.Writer, v nodesView, now time.Time) {
	fmt.Fprintf(w, "self: %s  addr %s  strategy %s  incarnation %d", v.Self.Node, v.Self.Addr, v.Self.Strategy, v.Self.Incarnation)
	if len(v.Self.Tags) > 0 {
		fmt.Fprintf(w, "  tags %s", formatTags(v.Self.Tags))
	}
	fmt.Fprint(w, "\n\n")
	connected := map[string]nodeView{}
	for _, n := range v.Connected {
		connected[n.Node] = n
	}
	seen := map[string]bool{}
	recent := map[string]recentMember{}
	for _, r := range v.Recent {
		recent[r.Node] = r
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDR\tDISCOVERED\tCONNECTED\tDIRECTION\tTAGS")
	row := func(node, addr, disc string) {
		conn, dir, tags := "-", "-", "-"
		if c, ok := connected[node]; ok {
			if len(c.Tags) > 0 {
				tags = formatTags(c.Tags)
			}
			conn = "up " + ago(now, c.Since)
			if c.Addr != "" {
				addr = c.Addr
			}
			if c.Outbound != nil {
				dir = map[bool]string{true: "dialled", false: "accepted"}[*c.Outbound]
			}
			if c.Erlang {
				dir = "erlang"
			}
		} else if r, ok := recent[node]; ok {
			conn = "down (" + r.Reason + ") " + ago(now, r.Since)
		}
		if addr == "" {
			addr = "(not dialable)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", node, addr, disc, conn, dir, tags)
	}
	for _, d := range v.Discovered {
		seen[d.Node] = true
		row(d.Node, d.Addr, d.Source+" "+ago(now, d.Since))
	}
	for _, c := range v.Connected {
		if !seen[c.Node] {
			row(c.Node, c.Addr, "- (via mesh)")
		}
	}
	for _, r := range v.Recent {
		if !seen[r.Node] {
			addr := r.Addr
			if addr == "" {
				addr = "-"
			}
			row(r.Node, addr, "-")
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d discovered, %d connected, %d down lately\n", len(v.Discovered), len(v.Connected), len(v.Recent))
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}
