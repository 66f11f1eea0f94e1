//go:build linux

package netlab

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
)

var (
	availOnce sync.Once
	availErr  error

	netemOnce sync.Once
	netemErr  error
)

// Available reports why namespace labs cannot run here (nil when they can):
// not root, ip or tc missing, or a namespace cannot be created. The probe
// runs once per process.
func Available() error {
	availOnce.Do(func() { availErr = probe() })
	return availErr
}

func probe() error {
	if os.Geteuid() != 0 {
		return errors.New("netlab: network namespace tests need root")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("netlab: network namespace tests need iproute2 (%s): %w", tool, err)
		}
	}
	ns := probeName()
	if err := run(context.Background(), "", "ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("netlab: cannot create a network namespace: %w", err)
	}
	if err := run(context.Background(), "", "ip", "netns", "del", ns); err != nil {
		return fmt.Errorf("netlab: cannot delete network namespace %s: %w", ns, err)
	}
	return nil
}

func probeName() string {
	return fmt.Sprintf("%s%d-%04x-probe", Prefix, os.Getpid(), rand.N(1<<16))
}

// Require skips the test when Available reports a problem, with a message
// that says what is missing; but when the environment has CI=true it fails
// the test instead (CI must run namespace tests).
func Require(t TB) {
	t.Helper()
	if err := Available(); err != nil {
		requireFail(t, err)
	}
}

func requireFail(t TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (CI=true: namespace tests must run, not skip)", err)
	}
	t.Skipf("skipping: %v", err)
}

// NetemSupported reports whether the kernel has the netem qdisc (nil when
// it has): it tries netem on a veth in a scratch namespace, once per
// process.
func NetemSupported() error {
	netemOnce.Do(func() {
		if netemErr = Available(); netemErr != nil {
			return
		}
		ns := probeName()
		ctx := context.Background()
		if netemErr = run(ctx, "", "ip", "netns", "add", ns); netemErr != nil {
			return
		}
		defer func() { _ = run(ctx, "", "ip", "netns", "del", ns) }()
		if netemErr = run(ctx, "", "ip", "-n", ns, "link", "add", "name", "probe0", "type", "veth", "peer", "name", "probe1"); netemErr != nil {
			return
		}
		err := run(ctx, "", "tc", "-n", ns, "qdisc", "add", "dev", "probe0", "root", "netem", "delay", "1ms")
		if err != nil && strings.Contains(err.Error(), "qdisc kind is unknown") {
			err = ErrNetemUnsupported
		}
		netemErr = err
	})
	return netemErr
}

// RequireNetem is Require plus a kernel with the netem qdisc. Without netem
// it skips, also when CI=true (see the comment inside).
func RequireNetem(t TB) {
	t.Helper()
	Require(t)
	if err := NetemSupported(); err != nil {
		// Not even under CI=true: netem is a kernel build option
		// (CONFIG_NET_SCH_NETEM) that no install step can add, and this
		// project's CI kernel lacks it. Impair labs give loss, delay and
		// jitter in userspace instead.
		t.Skipf("%v; use an Options.Impair lab for loss, delay and jitter", err)
	}
}

// TB is the part of testing.TB that netlab uses. *testing.T and
// *testing.B satisfy it; netlab does not import package testing itself, so
// that the macula command (bench) can link it without test-only code.
type TB interface {
	Helper()
	Name() string
	Cleanup(func())
	Failed() bool
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Skipf(format string, args ...any)
}
