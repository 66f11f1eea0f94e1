//go:build linux

package scenario

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/macula-io/cluster/internal/netlab"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeRaceBuild()
		netlab.Cleanup()
		if code == 0 {
			if left := labNamespaces(); len(left) > 0 {
				fmt.Fprintf(os.Stderr, "scenario: namespaces left behind: %v\n", left)
				code = 1
			}
		}
		os.Exit(code)
	}))
}

// labNamespaces lists the namespaces of this process's labs that still
// exist.
func labNamespaces() []string {
	ents, _ := os.ReadDir("/run/netns") // where iproute2 keeps named namespaces
	var out []string
	prefix := fmt.Sprintf("%s%d-", netlab.Prefix, os.Getpid())
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

var (
	raceOnce sync.Once
	raceDir  string
	raceBin  string
	raceErr  error
)

// maculaBin returns the macula binary for the scenarios: race-built when
// the tests are (SCENARIO_RACE_BIN=0 turns that off), else netlab's build.
func maculaBin(t *testing.T) string {
	t.Helper()
	if !raceEnabled || os.Getenv("SCENARIO_RACE_BIN") == "0" {
		return netlab.BuildMacula(t)
	}
	raceOnce.Do(func() {
		// netlab's prefix: a directory left by a killed run is removed by
		// the next netlab build or lab.
		raceDir, raceErr = os.MkdirTemp("", fmt.Sprintf("netlab-build-%d-race-", os.Getpid()))
		if raceErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		bin := filepath.Join(raceDir, "macula")
		out, err := exec.CommandContext(ctx, "go", "build", "-race", "-o", bin, netlab.MaculaPkg).CombinedOutput()
		if err != nil {
			raceErr = fmt.Errorf("go build -race %s: %w\n%s", netlab.MaculaPkg, err, out)
			return
		}
		raceBin = bin
	})
	if raceErr != nil {
		t.Fatal(raceErr)
	}
	return raceBin
}

func removeRaceBuild() {
	if raceDir != "" {
		_ = os.RemoveAll(raceDir)
	}
}
