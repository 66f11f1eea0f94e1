//go:build linux

package netlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Bounds on what a Proc keeps.
const (
	// MaxLines is how many stdout lines a Proc keeps; later lines are
	// counted in Dropped and not stored.
	MaxLines = 1 << 20
	// MaxLineSize is the longest stdout line kept whole; a longer one is cut
	// into pieces of this size.
	MaxLineSize = 1 << 20
	// StderrSize is how much of the end of stderr a Proc keeps.
	StderrSize = 64 << 10
)

// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
var stopGrace = 5 * time.Second

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// Line is one line of a process's stdout. Lines are shared between callers:
// do not modify Raw or Fields.
type Line struct {
	// At is when the line was read from the pipe.
	At time.Time
	// Raw is the line without its newline.
	Raw []byte
	// Fields is the line parsed as a JSON object (numbers as json.Number);
	// nil when the line is not one.
	Fields map[string]any
}

// Str returns field key as a string: a string as is, a number in its JSON
// spelling, anything else as JSON; "" when absent or null.
func (l Line) Str(key string) string {
	v, ok := l.Fields[key]
	if !ok || v == nil {
		return ""
	}
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// Uint returns field key as an unsigned integer.
func (l Line) Uint(key string) (uint64, bool) {
	n, ok := l.Fields[key].(json.Number)
	if !ok {
		return 0, false
	}
	u, err := strconv.ParseUint(n.String(), 10, 64)
	return u, err == nil
}

// Event returns the "event" field.
func (l Line) Event() string { return l.Str("event") }

// Node returns the "node" field.
func (l Line) Node() string { return l.Str("node") }

func (l Line) String() string { return string(l.Raw) }

// Proc is a process started by Host.Start. Its methods are safe for
// concurrent use.
type Proc struct {
	// Host is where the process runs.
	Host *Host
	// Name is the base name of the binary.
	Name string

	cmd  *exec.Cmd
	pid  int
	done chan struct{} // closed when the process was waited for and its output read

	mu      sync.Mutex
	lines   []Line
	partial []byte
	dropped int
	notify  chan struct{} // closed and replaced on every new line
	stderr  []byte
	waitErr error
	state   *os.ProcessState
}

// Start runs bin with args inside the host's namespace ("ip netns exec NS
// BIN ARGS..."; ip execs the binary, so Pid is the binary's pid) in a
// process group of its own. The environment is os.Environ() without proxy
// variables, then env ("KEY=value"; later entries win). Every stdout line is
// kept with the time it was read and parsed as JSON when it is an object;
// the last StderrSize bytes of stderr are kept. When ctx is done the whole
// group is killed (SIGKILL), as with exec.CommandContext; the process also
// gets SIGKILL if the calling process dies. Lab.Close kills it too.
func (h *Host) Start(ctx context.Context, env []string, bin string, args ...string) (*Proc, error) {
	if h.lab.isClosed() {
		return nil, ErrClosed
	}
	p := &Proc{Host: h, Name: filepath.Base(bin), done: make(chan struct{}), notify: make(chan struct{})}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, bin}, args...)...)
	cmd.Env = append(cleanEnv(os.Environ()), env...)
	cmd.Stdout = (*stdoutWriter)(p)
	cmd.Stderr = (*stderrWriter)(p)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		p.killGroup()
		return nil
	}
	cmd.WaitDelay = 2 * time.Second
	p.cmd = cmd
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("netlab: %s: start %s: %w", h.NS, bin, err)
	}
	p.pid = cmd.Process.Pid
	go p.wait()
	if err := h.lab.addProc(p); err != nil {
		p.killGroup()
		<-p.done
		return nil, err
	}
	return p, nil
}

// cleanEnv drops proxy variables.
func cleanEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasSuffix(strings.ToLower(k), "_proxy") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (p *Proc) wait() {
	err := p.cmd.Wait()
	p.mu.Lock()
	if len(p.partial) > 0 {
		p.addLineLocked(p.partial, time.Now())
		p.partial = nil
	}
	p.waitErr = err
	p.state = p.cmd.ProcessState
	close(p.notify)
	p.notify = make(chan struct{})
	p.mu.Unlock()
	close(p.done)
}

type stdoutWriter Proc

func (w *stdoutWriter) Write(b []byte) (int, error) {
	p := (*Proc)(w)
	now := time.Now()
	n := len(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	added := false
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.partial = append(p.partial, b...)
			for len(p.partial) >= MaxLineSize {
				p.addLineLocked(p.partial[:MaxLineSize], now)
				p.partial = append([]byte(nil), p.partial[MaxLineSize:]...)
				added = true
			}
			break
		}
		line := b[:i]
		if len(p.partial) > 0 {
			line = append(p.partial, line...)
			p.partial = nil
		}
		p.addLineLocked(line, now)
		added = true
		b = b[i+1:]
	}
	if added {
		close(p.notify)
		p.notify = make(chan struct{})
	}
	return n, nil
}

// addLineLocked stores a copy of raw.
func (p *Proc) addLineLocked(raw []byte, at time.Time) {
	if len(p.lines) >= MaxLines {
		p.dropped++
		return
	}
	raw = bytes.TrimSuffix(raw, []byte("\r"))
	l := Line{At: at, Raw: append([]byte(nil), raw...)}
	if t := bytes.TrimSpace(l.Raw); len(t) > 0 && t[0] == '{' {
		d := json.NewDecoder(bytes.NewReader(t))
		d.UseNumber()
		var m map[string]any
		if d.Decode(&m) == nil {
			l.Fields = m
		}
	}
	p.lines = append(p.lines, l)
}

type stderrWriter Proc

func (w *stderrWriter) Write(b []byte) (int, error) {
	p := (*Proc)(w)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stderr = append(p.stderr, b...)
	if len(p.stderr) > 2*StderrSize {
		p.stderr = append([]byte(nil), p.stderr[len(p.stderr)-StderrSize:]...)
	}
	return len(b), nil
}

func (p *Proc) String() string { return fmt.Sprintf("%s:%s[%d]", p.Host.NS, p.Name, p.pid) }

// Pid is the process id (of the binary itself).
func (p *Proc) Pid() int { return p.pid }

// Events returns a copy of the stdout lines received so far, JSON or not.
func (p *Proc) Events() []Line {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Line(nil), p.lines...)
}

// Dropped is how many lines were not kept because MaxLines was reached.
func (p *Proc) Dropped() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

// Stderr returns the kept end of stderr (at most StderrSize bytes).
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stderr
	if len(s) > StderrSize {
		s = s[len(s)-StderrSize:]
	}
	return string(s)
}

// WaitFor returns the first line, already received or yet to come, for
// which match returns true. It fails when ctx is done or when the process
// has exited with no matching line (ErrExited); the error includes the exit
// status and the end of stderr. To wait for something new, match on
// line.At after a time taken before the action.
func (p *Proc) WaitFor(ctx context.Context, match func(Line) bool) (Line, error) {
	next := 0
	for {
		// Lines are only appended, never changed: match runs on a snapshot
		// without the lock, so it may call p's methods.
		p.mu.Lock()
		lines := p.lines
		exited := p.state != nil || p.waitErr != nil
		ch := p.notify
		p.mu.Unlock()
		for ; next < len(lines); next++ {
			if match(lines[next]) {
				return lines[next], nil
			}
		}
		if exited {
			return Line{}, fmt.Errorf("netlab: %s: wait for line: %w (%v) after %d lines; stderr: %s", p, ErrExited, p.exitStatus(), next, p.stderrTail(2048))
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Line{}, fmt.Errorf("netlab: %s: wait for line: %w after %d lines; last: %s; stderr: %s", p, ctx.Err(), next, p.lastLine(), p.stderrTail(2048))
		}
	}
}

func (p *Proc) exitStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waitErr != nil {
		return p.waitErr.Error()
	}
	if p.state != nil {
		return p.state.String()
	}
	return "running"
}

func (p *Proc) lastLine() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.lines) == 0 {
		return "(none)"
	}
	return string(p.lines[len(p.lines)-1].Raw)
}

func (p *Proc) stderrTail(n int) string {
	s := strings.TrimSpace(p.Stderr())
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	if s == "" {
		return "(empty)"
	}
	return s
}

// Done is closed when the process has exited and its output was read.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit error (nil for
// status 0), like exec.Cmd.Wait. It may be called many times.
func (p *Proc) Wait() error {
	<-p.done
	return p.waitErr
}

// Signal sends sig to the process (not its group) if it still runs.
func (p *Proc) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	return syscall.Kill(p.pid, sig)
}

// Stop sends SIGTERM to the process group, waits up to 5 s for the process
// to exit, then sends SIGKILL. It returns the exit error (nil for exit
// status 0), or an error saying it had to be killed.
func (p *Proc) Stop() error {
	p.signalGroup(syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-p.done:
		return p.waitErr
	case <-t.C:
	}
	p.killGroup()
	<-p.done
	return fmt.Errorf("netlab: %s: still running %v after SIGTERM, killed: %w", p, stopGrace, p.waitErr)
}

// Kill sends SIGKILL to the process group and waits for the process to exit.
func (p *Proc) Kill() error {
	p.killGroup()
	<-p.done
	return nil
}

func (p *Proc) killGroup() { p.signalGroup(syscall.SIGKILL) }

func (p *Proc) signalGroup(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.pid, sig)
}

// waitBounded waits for the process at most d.
func (p *Proc) waitBounded(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	}
}

// ExitCode is the exit code, or -1 while running or when killed by a signal.
func (p *Proc) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == nil {
		return -1
	}
	return p.state.ExitCode()
}

// CPUTime is the user+system CPU time the process used so far (from
// /proc/PID/stat while it runs, from its rusage after it exited).
func (p *Proc) CPUTime() (time.Duration, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.state == nil {
			return 0, fmt.Errorf("netlab: %s: no process state", p)
		}
		return p.state.UserTime() + p.state.SystemTime(), nil
	default:
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return 0, fmt.Errorf("netlab: %s: cpu time: %w", p, err)
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state(3) ... utime(14) stime(15).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("netlab: %s: cpu time: bad stat %q", p, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("netlab: %s: cpu time: bad stat %q", p, b)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("netlab: %s: cpu time: %w", p, err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// MaxRSS is the peak resident set size in bytes (VmHWM while the process
// runs, from its rusage after it exited).
func (p *Proc) MaxRSS() (uint64, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		if ru, ok := p.state.SysUsage().(*syscall.Rusage); ok && ru != nil {
			return uint64(ru.Maxrss) * 1024, nil
		}
		return 0, fmt.Errorf("netlab: %s: no rusage", p)
	default:
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return 0, fmt.Errorf("netlab: %s: rss: %w", p, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("netlab: %s: rss: %w", p, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("netlab: %s: rss: no VmHWM", p)
}
