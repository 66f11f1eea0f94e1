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
)

func cmdNodes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("nodes", stderr)
	addr := fs.String("http", "127.0.0.1:9180", "the --http host:port of a running \"macula run --http ...\"")
	jsonOut := fs.Bool("json", false, "print the raw JSON view")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	url := *addr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+"/nodes", nil)
	if err != nil {
		return usageError{err}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("no node answering at %s (start one with `macula run --http %s`): %w", *addr, *addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read %s: %w", req.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", req.URL, resp.Status)
	}
	if *jsonOut {
		_, err := stdout.Write(body)
		return err
	}
	var v nodesView
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s: not a macula /nodes answer: %w", req.URL, err)
	}
	printNodes(stdout, v, time.Now())
	return nil
}

func printNodes(w io.Writer, v nodesView, now time.Time) {
	fmt.Fprintf(w, "self: %s  addr %s  strategy %s  incarnation %d\n\n", v.Self.Node, v.Self.Addr, v.Self.Strategy, v.Self.Incarnation)
	connected := map[string]nodeView{}
	for _, n := range v.Connected {
		connected[n.Node] = n
	}
	seen := map[string]bool{}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDR\tDISCOVERED\tCONNECTED\tDIRECTION")
	row := func(node, addr, disc string) {
		conn, dir := "-", "-"
		if c, ok := connected[node]; ok {
			conn = "up " + ago(now, c.Since)
			if c.Addr != "" {
				addr = c.Addr
			}
			if c.Outbound != nil {
				dir = map[bool]string{true: "dialled", false: "accepted"}[*c.Outbound]
			}
		}
		if addr == "" {
			addr = "(not dialable)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", node, addr, disc, conn, dir)
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
	tw.Flush()
	fmt.Fprintf(w, "\n%d discovered, %d connected\n", len(v.Discovered), len(v.Connected))
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}
