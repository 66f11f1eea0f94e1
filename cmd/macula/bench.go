//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/macula-io/cluster/internal/envx"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/macula-io/cluster/internal/netlab"
	"github.com/macula-io/cluster/internal/scenario"
)

// benchExtraHosts is how many hosts a scenario may add to its size (bad
// nodes, a late joiner, a flooder).
const benchExtraHosts = 2

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stderr)
	sizesFlag := fs.String("sizes", "10,50", "cluster sizes (hosts), comma-separated")
	scenFlag := fs.String("scenarios", "all", "scenarios, comma-separated, or all: "+strings.Join(scenario.Names(), ","))
	jsonFile := fs.String("json", "", "also write the results as JSON to this file")
	nodeLog := fs.String("node-log-level", "info", "--log-level of every node (debug: what --logs keeps says more, about the end of each run)")
	logsDir := fs.String("logs", "", "write the last lines and stderr of every process of each run to DIR/SCENARIO-SIZE.log")
	quick := fs.Bool("quick", false, "short runs: loss 15s, 5 restarts, 2 stops of the starved host, flood 20k packets/s for 3s, steady window 3s")
	linkTimeout := fs.String("link-timeout", "5s", "--link-timeout of every node (the product default is 5s)")
	interval := fs.String("interval", "1500ms", "--interval (gossip heartbeat) of every node (the product default is 1500ms)")
	floodRate := fs.Int("flood-rate", 0, "flood scenario: hostile packets per second (default 100000, 20000 with --quick)")
	seed := fs.Uint64("seed", 0, "churn: random seed (default from the clock)")
	backlogLimit := fs.Bool("backlog-limit", true, "raise the kernel's per-CPU input backlog (net.core.netdev_max_backlog, shared by every namespace;\n1000 packets by default: one multicast heartbeat on the lab's bridge is a packet per host) for the run\nwhen the largest size needs more, and restore it at the end")
	var nodeEnv []string
	fs.Func("node-env", "add KEY=VALUE to the environment of every node process (repeatable; e.g. GOMAXPROCS=1 or GODEBUG=...)", func(v string) error {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		nodeEnv = append(nodeEnv, v)
		return nil
	})
	neighLimit := fs.Bool("neigh-limit", true, "raise the kernel's IPv4 neighbour table limit (net.ipv4.neigh.default.gc_thresh2/3, shared by every\nnamespace; 1024 entries by default, enough for about 30 fully meshed hosts) for the run when\nthe largest size needs more, and restore it at the end")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: macula bench [flags]

Runs cluster scenarios in network namespaces (one "macula run" process per
namespace host, this very binary), at each size, and prints a Markdown table
of the results next to the goals. Needs root (ip netns). Nothing leaves the
namespaces it creates; Ctrl-C removes them.

Scenarios:
`)
		for _, s := range scenario.All {
			fmt.Fprintf(fs.Output(), "  %-10s %s\n", s.Name, s.Summary)
		}
		fmt.Fprintf(fs.Output(), "\nFlags:\n")
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sizes, err := parseSizes(*sizesFlag)
	if err != nil {
		return usageError{err}
	}
	scens, err := parseScenarios(*scenFlag)
	if err != nil {
		return usageError{err}
	}
	lt, err := envx.ParseDuration(*linkTimeout)
	if err != nil || lt < time.Second {
		return usageError{fmt.Errorf("--link-timeout %q: want a duration of at least 1s", *linkTimeout)}
	}
	iv, err := envx.ParseDuration(*interval)
	if err != nil || iv <= 0 {
		return usageError{fmt.Errorf("--interval %q: want a positive duration", *interval)}
	}
	if *floodRate < 0 {
		return usageError{fmt.Errorf("--flood-rate %d: want >= 0", *floodRate)}
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: it creates network namespaces (ip netns); run it as root, e.g. sudo macula bench")
	}
	if *logsDir != "" {
		if err := os.MkdirAll(*logsDir, 0o755); err != nil {
			return fmt.Errorf("--logs: %w", err)
		}
	}
	if err := netlab.Available(); err != nil {
		return fmt.Errorf("bench cannot make network namespaces here: %w", err)
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: own executable: %w", err)
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	if need := neighNeed(slices.Max(sizes) + benchExtraHosts); *neighLimit {
		restore, err := raiseNeighLimit(need, logf)
		if err != nil {
			logf("warning: %v", err)
		}
		defer restore()
	} else if cur, err := readSysctlInt(neighDir + "gc_thresh3"); err == nil && cur < need {
		logf("warning: net.ipv4.neigh.default.gc_thresh3 is %d, the largest size needs about %d: expect lost packets", cur, need)
	}

	if need := backlogNeed(slices.Max(sizes) + benchExtraHosts); *backlogLimit {
		restore, err := raiseSysctl(backlogFile, need, "the per-CPU input backlog is shared by every namespace", logf)
		if err != nil {
			logf("warning: %v", err)
		}
		defer restore()
	}

	rep := benchReport{
		Started: time.Now().UTC(), Binary: bin, Version: version(), GoVersion: runtime.Version(),
		CPUs: runtime.NumCPU(), Sizes: sizes, Scenarios: scens, Quick: *quick,
		LinkTimeoutMS: float64(lt.Milliseconds()), IntervalMS: float64(iv.Milliseconds()), NodeEnv: nodeEnv,
	}
	var interrupted error
runs:
	for _, size := range sizes {
		for _, name := range scens {
			s, _ := scenario.Lookup(name)
			cfg := scenario.Config{
				Bin: bin, Hosts: size, LinkTimeout: lt, Interval: iv, Short: *quick,
				FloodRate: *floodRate, Seed: *seed, Logf: logf, LogLevel: *nodeLog, KeepLogs: *logsDir != "",
				Env: nodeEnv,
			}
			logf("%s/%d: start (bound %v)", name, size, s.Bound(cfg).Round(time.Second))
			r, err := s.Run(ctx, cfg)
			logf("%s/%d: %s in %.1fs", name, size, r.Outcome, r.ElapsedMS/1000)
			if err != nil {
				logf("%s/%d: %v", name, size, err)
			}
			for _, v := range firstN(r.Violations, 5) {
				logf("%s/%d: violation: %s", name, size, v)
			}
			if *logsDir != "" && r.Logs != "" {
				f := filepath.Join(*logsDir, fmt.Sprintf("%s-%d.log", name, size))
				if err := os.WriteFile(f, []byte(r.Logs), 0o644); err != nil {
					logf("%s/%d: logs: %v", name, size, err)
				} else {
					logf("%s/%d: processes' logs in %s", name, size, f)
				}
			}
			rep.Results = append(rep.Results, r)
			if ctx.Err() != nil {
				interrupted = fmt.Errorf("bench interrupted: %w", context.Cause(ctx))
				break runs
			}
		}
	}
	rep.Goals = evalGoals(rep.Results, sizes, lt)
	rep.ElapsedS = math.Round(time.Since(rep.Started).Seconds())
	writeMarkdown(stdout, &rep)
	if *jsonFile != "" {
		b, err := json.MarshalIndent(&rep, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonFile, append(b, '\n'), 0o644)
		}
		if err != nil {
			return errors.Join(interrupted, fmt.Errorf("bench: write %s: %w", *jsonFile, err))
		}
		logf("JSON written to %s", *jsonFile)
	}
	if interrupted != nil {
		return interrupted
	}
	bad := 0
	for _, r := range rep.Results {
		if !r.OK() {
			bad++
		}
	}
	if bad > 0 {
		fmt.Fprintf(stderr, "macula bench: %d of %d runs broke an invariant or failed\n", bad, len(rep.Results))
		return checkFailed{fmt.Errorf("%d runs failed", bad)}
	}
	return nil
}

// backlogFile is the per-CPU input backlog limit. Every packet a veth
// delivers waits there, for every namespace of the machine: a lab host's
// multicast heartbeat puts one packet per host on it at once, where real
// hosts each have a backlog of their own.
const backlogFile = "/proc/sys/net/core/netdev_max_backlog"

// backlogNeed is the backlog for n hosts: 100 packets per host (a run of
// 100 hosts at the default of 1000 dropped 16,878 packets there, and one
// observer took 7.6 s to see a cut host).
func backlogNeed(n int) int { return max(1000, 100*n) }

// raiseSysctl raises the integer in file to need when it is lower, and
// returns a function that puts the old value back.
func raiseSysctl(file string, need int, why string, logf func(string, ...any)) (restore func(), err error) {
	restore = func() {}
	name := strings.ReplaceAll(strings.TrimPrefix(file, "/proc/sys/"), "/", ".")
	cur, err := readSysctlInt(file)
	if err != nil {
		return restore, fmt.Errorf("cannot read %s: %w", name, err)
	}
	if cur >= need {
		return restore, nil
	}
	if err := writeSysctlInt(file, need); err != nil {
		return restore, fmt.Errorf("cannot raise %s to %d: %w", name, need, err)
	}
	logf("raised %s from %d to %d for the run (%s)", name, cur, need, why)
	return func() {
		if err := writeSysctlInt(file, cur); err != nil {
			logf("warning: could not restore %s to %d: %v", name, cur, err)
			return
		}
		logf("restored %s to %d", name, cur)
	}, nil
}

// neighDir holds the global IPv4 neighbour table limits. The table is
// shared by every network namespace, and only the root namespace shows
// these files.
const neighDir = "/proc/sys/net/ipv4/neigh/default/"

// neighNeed estimates the IPv4 neighbour entries a lab of n fully meshed
// hosts needs: n-1 peers and a few multicast/broadcast entries per host,
// plus room for the rest of the machine.
func neighNeed(n int) int { return n*(n+4) + 512 }

// raiseNeighLimit, when gc_thresh3 < need, makes gc_thresh2 >= need and
// gc_thresh3 >= 2*need, and returns a function that puts the old values
// back.
func raiseNeighLimit(need int, logf func(string, ...any)) (restore func(), err error) {
	restore = func() {}
	t3, err := readSysctlInt(neighDir + "gc_thresh3")
	if err != nil {
		return restore, fmt.Errorf("cannot read the neighbour table limits: %w", err)
	}
	if t3 >= need {
		return restore, nil
	}
	// gc_thresh2 must stay <= gc_thresh3 at every step: 3 is raised first
	// and restored last.
	const why = "the kernel's neighbour table is shared by every namespace"
	r3, err := raiseSysctl(neighDir+"gc_thresh3", 2*need, why, logf)
	if err != nil {
		return restore, err
	}
	r2, err := raiseSysctl(neighDir+"gc_thresh2", need, why, logf)
	if err != nil {
		r3()
		return restore, err
	}
	return func() { r2(); r3() }, nil
}

func readSysctlInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func writeSysctlInt(path string, v int) error {
	return os.WriteFile(path, []byte(strconv.Itoa(v)), 0o644)
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range splitComma(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 2 || n > netlab.MaxHosts-benchExtraHosts {
			return nil, fmt.Errorf("--sizes: %q: want a number of hosts from 2 to %d", f, netlab.MaxHosts-benchExtraHosts)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--sizes: empty")
	}
	return out, nil
}

func parseScenarios(s string) ([]string, error) {
	if strings.TrimSpace(s) == "all" || strings.TrimSpace(s) == "" {
		return scenario.Names(), nil
	}
	var out []string
	for _, f := range splitComma(s) {
		if _, ok := scenario.Lookup(f); !ok {
			return nil, fmt.Errorf("--scenarios: unknown %q (want %s or all)", f, strings.Join(scenario.Names(), ","))
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	// Run them in the canonical order.
	slices.SortFunc(out, func(a, b string) int {
		return slices.Index(scenario.Names(), a) - slices.Index(scenario.Names(), b)
	})
	return out, nil
}

func firstN(s []string, n int) []string { return s[:min(n, len(s))] }

// benchReport is the JSON of --json.
type benchReport struct {
	Started       time.Time          `json:"started"`
	ElapsedS      float64            `json:"elapsed_s"`
	Binary        string             `json:"binary"`
	Version       string             `json:"version"`
	GoVersion     string             `json:"go_version"`
	CPUs          int                `json:"cpus"`
	Sizes         []int              `json:"sizes"`
	Scenarios     []string           `json:"scenarios"`
	Quick         bool               `json:"quick"`
	LinkTimeoutMS float64            `json:"link_timeout_ms"`
	IntervalMS    float64            `json:"interval_ms"`
	NodeEnv       []string           `json:"node_env,omitempty"`
	Goals         []goalResult       `json:"goals"`
	Results       []*scenario.Result `json:"results"`
}

// goalResult is one row of the table at one size.
type goalResult struct {
	Row      string  `json:"row"`
	Scenario string  `json:"scenario"`
	Size     int     `json:"size"`
	Goal     string  `json:"goal"`
	Value    string  `json:"value"`
	Met      *bool   `json:"met,omitempty"` // nil: no goal at this size, or no value
	Limit    float64 `json:"limit,omitempty"`
}

// benchRow is one line of the table: how to show a scenario's result and
// whether it meets its goal.
type benchRow struct {
	label, scenario, goal string
	show                  func(r *scenario.Result) string
	// check returns the limit and whether it is met; ok false = no goal
	// at this size (or nothing to check).
	check func(size int, r *scenario.Result, lt time.Duration) (limit float64, met, ok bool)
}

func benchRows() []benchRow {
	v := func(r *scenario.Result, k string) float64 { return r.Value(k) }
	atMost := func(key string, limit float64) func(int, *scenario.Result, time.Duration) (float64, bool, bool) {
		return func(_ int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
			x := r.Value(key)
			return limit, x <= limit, !math.IsNaN(x)
		}
	}
	return []benchRow{
		{"time to full mesh after the last start, median / max (ms)", "formation",
			"max <= 140 ms at 10 hosts, <= 1 s at 50, <= 2 s at 100",
			func(r *scenario.Result) string { return pair(v(r, "mesh_median_ms"), v(r, "mesh_max_ms"), 1) },
			func(size int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
				x := r.Value("mesh_max_ms")
				limit := 0.0
				switch {
				case size <= 10:
					limit = 140
				case size == 50:
					limit = 1000
				case size == 100:
					limit = 2000
				default:
					return 0, false, false
				}
				// A nodedown during formation or the steady window is a
				// violation: the row is not met then, however fast.
				return limit, x <= limit && r.OK(), !math.IsNaN(x)
			}},
		{"  same, measured from the last ready line, max (ms)", "formation", "",
			func(r *scenario.Result) string { return num(v(r, "mesh_after_ready_max_ms"), 1) }, nil},
		{"  formation: first to last start / CPU of all nodes until the full mesh (ms; the machine has 2 cores)", "formation", "",
			func(r *scenario.Result) string { return pair(v(r, "start_spread_ms"), v(r, "formation_cpu_all_ms"), 0) }, nil},
		{"late join: start to nodeup at all old nodes / at the joiner for all (ms)", "latejoin", "<= 50 ms both ways",
			func(r *scenario.Result) string { return pair(v(r, "join_in_max_ms"), v(r, "join_out_ms"), 1) },
			func(_ int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
				a, b := r.Value("join_in_max_ms"), r.Value("join_out_ms")
				return 50, a <= 50 && b <= 50 && r.OK(), !math.IsNaN(a) && !math.IsNaN(b)
			}},
		{"  late joiner: process start to its ready line / ready to linked both ways (ms)", "latejoin", "",
			func(r *scenario.Result) string { return pair(v(r, "join_startup_ms"), v(r, "join_after_ready_ms"), 1) }, nil},
		{"  late join: CPU of all nodes / of the joiner from its start to linked both ways (ms; the machine has 2 cores)", "latejoin", "",
			func(r *scenario.Result) string { return pair(v(r, "join_cpu_all_ms"), v(r, "join_cpu_joiner_ms"), 1) }, nil},
		{"crash (SIGKILL) detection, median / p95 / max (ms); false nodedowns", "crash", "max <= 100 ms at 10 hosts, 0 false",
			func(r *scenario.Result) string {
				return triple(v(r, "crash_detect_median_ms"), v(r, "crash_detect_p95_ms"), v(r, "crash_detect_max_ms"), 1) +
					"; " + num(v(r, "crash_collateral"), 0)
			},
			func(size int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
				x, c := r.Value("crash_detect_max_ms"), r.Value("crash_collateral")
				if size > 10 {
					return 0, false, false
				}
				return 100, x <= 100 && c == 0 && r.OK(), !math.IsNaN(x) && !math.IsNaN(c)
			}},
		{"silent loss (cable cut) detection, median / p95 / max (ms); false nodedowns", "silent", "median <= 4 s, max <= 6 s, 0 false",
			func(r *scenario.Result) string {
				return triple(v(r, "silent_detect_median_ms"), v(r, "silent_detect_p95_ms"), v(r, "silent_detect_max_ms"), 0) +
					"; " + num(v(r, "silent_collateral"), 0)
			},
			func(_ int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
				m, x, c := r.Value("silent_detect_median_ms"), r.Value("silent_detect_max_ms"), r.Value("silent_collateral")
				return 6000, m <= 4000 && x <= 6000 && c == 0, !math.IsNaN(m) && !math.IsNaN(x) && !math.IsNaN(c)
			}},
		{"partition: both sides report the other down, max (ms)", "partition", "",
			func(r *scenario.Result) string { return num(v(r, "partition_detect_max_ms"), 0) }, nil},
		{"  the lab's cut / heal command, start to return (ms; the outage and the heal are timed from the start)", "partition", "",
			func(r *scenario.Result) string { return pair(v(r, "partition_lab_ms"), v(r, "heal_lab_ms"), 0) }, nil},
		{"heal time to full mesh, median / max (ms); false nodedowns after the heal; within a side", "partition", "max <= 2 s, 0, 0",
			func(r *scenario.Result) string {
				return pair(v(r, "heal_median_ms"), v(r, "heal_max_ms"), 0) + "; " + num(v(r, "partition_downs_after_heal"), 0) +
					"; " + num(v(r, "partition_same_side_drops"), 0)
			},
			func(_ int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
				x, a, b := r.Value("heal_max_ms"), r.Value("partition_downs_after_heal"), r.Value("partition_same_side_drops")
				return 2000, x <= 2000 && a == 0 && b == 0 && r.OK(), !math.IsNaN(x) && !math.IsNaN(a) && !math.IsNaN(b)
			}},
		lossRow("loss10"),
		lossRow("loss"),
		{"CPU-starved host (SIGSTOP 2 s, repeatedly): false nodedowns at the others / at the starved node", "starve", "0 / 0",
			func(r *scenario.Result) string {
				s := num(v(r, "starve_false_nodedowns"), 0) + " / " + num(v(r, "starve_false_nodedowns_at_victim"), 0)
				if n := v(r, "starve_stops"); !math.IsNaN(n) {
					s += fmt.Sprintf(" (%.0f stops of %.1f s)", n, v(r, "starve_stop_ms")/1000)
				}
				return s
			},
			func(_ int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
				a, b := r.Value("starve_false_nodedowns"), r.Value("starve_false_nodedowns_at_victim")
				return 0, a == 0 && b == 0 && r.OK(), !math.IsNaN(a) && !math.IsNaN(b)
			}},
		{"churn: peer observations with exactly one nodedown + one nodeup", "churn", "all",
			func(r *scenario.Result) string {
				return num(v(r, "churn_exact"), 0) + " / " + num(v(r, "churn_observations"), 0) +
					" (" + num(v(r, "churn_restarts"), 0) + " restarts, " + num(v(r, "churn_kills"), 0) + " by SIGKILL)"
			},
			func(_ int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
				a, b := r.Value("churn_exact"), r.Value("churn_observations")
				return b, a == b && r.OK(), !math.IsNaN(a) && !math.IsNaN(b) && b > 0
			}},
		{"security: nodes that saw the wrong-secret node / links with the wrong-cookie node", "security", "0 / 0, rest meshed",
			func(r *scenario.Result) string {
				return num(v(r, "security_wrong_secret_seen_by"), 0) + " / " + num(v(r, "security_wrong_cookie_links"), 0)
			},
			func(_ int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
				a, b := r.Value("security_wrong_secret_seen_by"), r.Value("security_wrong_cookie_links")
				return 0, a == 0 && b == 0 && r.OK(), !math.IsNaN(a) && !math.IsNaN(b)
			}},
		{"flood at one node: packets sent (achieved rate / goal rate per s); rejected by the node / dropped by its kernel (socket buffer full); membership changes", "flood",
			"membership unchanged at the goal rate",
			func(r *scenario.Result) string {
				return num(v(r, "flood_sent"), 0) + " (" + num(v(r, "flood_rate_pps"), 0) + " / " + num(v(r, "flood_goal_pps"), 0) + "); " +
					num(v(r, "flood_rejected_at_target"), 0) + " / " + num(v(r, "flood_target_kernel_drops"), 0) + "; " +
					num(v(r, "flood_membership_changes"), 0)
			},
			// Met only when the flood reached (95% of) its goal rate:
			// membership unchanged under a weaker flood proves less.
			func(_ int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
				c, a, g := r.Value("flood_membership_changes"), r.Value("flood_rate_pps"), r.Value("flood_goal_pps")
				return g, c == 0 && a >= 0.95*g, !math.IsNaN(c) && !math.IsNaN(a) && !math.IsNaN(g)
			}},
		{"flood: target RSS before -> after; peak RSS before -> after (MiB)", "flood", "bounded",
			func(r *scenario.Result) string {
				return mib(v(r, "flood_rss_before_B")) + " -> " + mib(v(r, "flood_rss_after_B")) + "; " +
					mib(v(r, "flood_maxrss_before_B")) + " -> " + mib(v(r, "flood_maxrss_after_B"))
			},
			func(_ int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
				a, b := r.Value("flood_maxrss_before_B"), r.Value("flood_maxrss_after_B")
				return 64 << 20, b-a <= 64<<20, !math.IsNaN(a) && !math.IsNaN(b)
			}},
		{"flood: /healthz answered / failed; longest gap (ms); target CPU (% of a core)", "flood", "keeps answering",
			func(r *scenario.Result) string {
				return num(v(r, "flood_health_ok"), 0) + " / " + num(v(r, "flood_health_failed"), 0) + "; " + num(v(r, "flood_health_max_gap_ms"), 0) +
					"; " + num(v(r, "flood_target_cpu_pct"), 1)
			},
			func(_ int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
				g := r.Value("flood_health_max_gap_ms")
				return 3000, g <= 3000, !math.IsNaN(g)
			}},
		{"steady CPU per node, mean / max (% of a core; utime+stime over the window)", "formation", "mean <= 0.2% at 50 and 100 hosts",
			func(r *scenario.Result) string {
				return pair(v(r, "cpu_mean_pct"), v(r, "cpu_max_pct"), 3) + steadyWindow(r)
			},
			atSizes(atMost("cpu_mean_pct", 0.2), 50, 100)},
		{"steady bytes sent per node per second, median / max; received, median (eth0)", "formation", "sent <= 1 KB/s at 50 and 100 hosts",
			func(r *scenario.Result) string {
				return pair(v(r, "tx_median_Bps"), v(r, "tx_max_Bps"), 0) + "; " + num(v(r, "rx_median_Bps"), 0)
			},
			atSizes(atMost("tx_median_Bps", 1024), 50, 100)},
	}
}

// lossRow is the row of a loss scenario (loss: 20%, loss10: 10%).
func lossRow(name string) benchRow {
	pct := "20%"
	if name == "loss10" {
		pct = "10%"
	}
	return benchRow{"loss " + pct + " + 50 ms jitter: false nodedowns (gossip lost events)", name, "0 nodedowns",
		func(r *scenario.Result) string {
			return num(r.Value("loss_false_nodedowns"), 0) + " (" + num(r.Value("loss_gossip_lost"), 0) + ")" + lossSetting(r)
		},
		func(_ int, r *scenario.Result, _ time.Duration) (float64, bool, bool) {
			x := r.Value("loss_false_nodedowns")
			return 0, x == 0 && r.OK(), !math.IsNaN(x)
		}}
}

// atSizes restricts a check to some sizes (no goal at the others).
func atSizes(check func(int, *scenario.Result, time.Duration) (float64, bool, bool), sizes ...int) func(int, *scenario.Result, time.Duration) (float64, bool, bool) {
	return func(size int, r *scenario.Result, lt time.Duration) (float64, bool, bool) {
		if !slices.Contains(sizes, size) {
			return 0, false, false
		}
		return check(size, r, lt)
	}
}

func steadyWindow(r *scenario.Result) string {
	if w := r.Value("steady_window_s"); !math.IsNaN(w) {
		return fmt.Sprintf(" (%.0f s window)", w)
	}
	return ""
}

func lossSetting(r *scenario.Result) string {
	l, j := r.Value("loss_pct"), r.Value("loss_jitter_ms")
	if math.IsNaN(l) {
		return ""
	}
	s := fmt.Sprintf(", %.0f%% loss", l)
	if j > 0 {
		s += fmt.Sprintf(" + %.0f ms jitter", j)
	} else {
		s += ", no jitter"
	}
	if d := r.Value("loss_duration_s"); !math.IsNaN(d) {
		s += fmt.Sprintf(" for %.0fs", d)
	}
	return s + fmt.Sprintf(", link timeout %.0fs", r.LinkTimeoutMS/1000)
}

func num(x float64, digits int) string {
	if math.IsNaN(x) {
		return "-"
	}
	return strconv.FormatFloat(x, 'f', digits, 64)
}

func pair(a, b float64, digits int) string { return num(a, digits) + " / " + num(b, digits) }

func triple(a, b, c float64, digits int) string {
	return num(a, digits) + " / " + num(b, digits) + " / " + num(c, digits)
}

func mib(x float64) string { return num(x/(1<<20), 1) }

func evalGoals(results []*scenario.Result, sizes []int, lt time.Duration) []goalResult {
	var out []goalResult
	for _, row := range benchRows() {
		for _, size := range sizes {
			r := findResult(results, row.scenario, size)
			if r == nil {
				continue
			}
			g := goalResult{Row: row.label, Scenario: row.scenario, Size: size, Goal: row.goal, Value: row.show(r)}
			if row.check != nil {
				if limit, met, ok := row.check(size, r, lt); ok {
					g.Met, g.Limit = &met, limit
				}
			}
			out = append(out, g)
		}
	}
	return out
}

func findResult(results []*scenario.Result, name string, size int) *scenario.Result {
	for _, r := range results {
		if r.Scenario == name && r.Hosts == size {
			return r
		}
	}
	return nil
}

func writeMarkdown(w io.Writer, rep *benchReport) {
	fmt.Fprintf(w, "## macula bench\n\n%s, %s, %d CPUs; failure detector profile lan (the default); link timeout %v, heartbeat interval %v",
		rep.Version, rep.GoVersion, rep.CPUs, time.Duration(rep.LinkTimeoutMS)*time.Millisecond,
		time.Duration(rep.IntervalMS)*time.Millisecond)
	if rep.Quick {
		fmt.Fprint(w, "; --quick")
	}
	if len(rep.NodeEnv) > 0 {
		fmt.Fprintf(w, "; node environment %s", strings.Join(rep.NodeEnv, " "))
	}
	fmt.Fprintf(w, "; %.0fs in all.\n\n", rep.ElapsedS)
	fmt.Fprint(w, "| measure | goal |")
	for _, s := range rep.Sizes {
		fmt.Fprintf(w, " %d hosts |", s)
	}
	fmt.Fprint(w, "\n|---|---|")
	for range rep.Sizes {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
	for _, row := range benchRows() {
		if !slices.Contains(rep.Scenarios, row.scenario) {
			continue
		}
		fmt.Fprintf(w, "| %s | %s |", row.label, row.goal)
		for _, size := range rep.Sizes {
			cell := "-"
			for _, g := range rep.Goals {
				if g.Row == row.label && g.Size == size {
					cell = g.Value
					if g.Met != nil {
						if *g.Met {
							cell += " **met**"
						} else {
							cell += " **MISSED**"
						}
					}
				}
			}
			fmt.Fprintf(w, " %s |", strings.ReplaceAll(cell, "|", "/"))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, "\n| scenario |")
	for _, s := range rep.Sizes {
		fmt.Fprintf(w, " %d hosts |", s)
	}
	fmt.Fprint(w, "\n|---|")
	for range rep.Sizes {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
	for _, name := range rep.Scenarios {
		fmt.Fprintf(w, "| %s |", name)
		for _, size := range rep.Sizes {
			if r := findResult(rep.Results, name, size); r != nil {
				fmt.Fprintf(w, " %s (%.0fs) |", r.Outcome, r.ElapsedMS/1000)
			} else {
				fmt.Fprint(w, " not run |")
			}
		}
		fmt.Fprintln(w)
	}
	var notes []string
	if n := scaleNote(rep.Results); n != "" {
		notes = append(notes, n)
	}
	for _, r := range rep.Results {
		prefix := fmt.Sprintf("%s/%d: ", r.Scenario, r.Hosts)
		if r.Err != "" {
			notes = append(notes, prefix+"error: "+r.Err)
		}
		for _, v := range firstN(r.Violations, 10) {
			notes = append(notes, prefix+"violation: "+v)
		}
		if len(r.Violations) > 10 {
			notes = append(notes, fmt.Sprintf("%s... %d more violations (see --json)", prefix, len(r.Violations)-10))
		}
		for _, n := range r.Notes {
			notes = append(notes, prefix+n)
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// scaleNote compares the steady cost per node at 100 hosts with the cost at
// 50 (goal: at most 1.2x), when both sizes ran.
func scaleNote(results []*scenario.Result) string {
	a, b := findResult(results, "formation", 50), findResult(results, "formation", 100)
	if a == nil || b == nil {
		return ""
	}
	var parts []string
	met := true
	for _, k := range []struct{ key, what string }{{"cpu_mean_pct", "CPU"}, {"tx_median_Bps", "bytes sent"}} {
		x, y := a.Value(k.key), b.Value(k.key)
		if math.IsNaN(x) || math.IsNaN(y) || x <= 0 {
			return ""
		}
		parts = append(parts, fmt.Sprintf("%s %.2fx", k.what, y/x))
		met = met && y <= 1.2*x
	}
	verdict := "**met**"
	if !met {
		verdict = "**MISSED**"
	}
	return "steady cost per node at 100 hosts / at 50 hosts (goal <= 1.2x): " + strings.Join(parts, ", ") + " " + verdict
}
