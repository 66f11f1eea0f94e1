//go:build linux

package netlab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaculaPkg is the package BuildMacula and Build build.
const MaculaPkg = "github.com/macula-io/cluster/cmd/macula"

// buildPrefix starts the name of BuildMacula's directory in os.TempDir():
// "netlab-build-<pid>-<random>".
const buildPrefix = "netlab-build-"

var (
	buildMu   sync.Mutex
	buildDir  string
	buildBins = map[string]string{} // package -> binary
	buildErrs = map[string]error{}
)

// Build runs "go build -o DIR/macula github.com/macula-io/cluster/cmd/macula"
// and returns the binary's path. It must run inside the module (a test's
// working directory is).
func Build(dir string) (string, error) { return BuildPackage(dir, MaculaPkg) }

// BuildPackage runs "go build -o DIR/NAME PKG", NAME being the last element
// of PKG, and returns the binary's path.
func BuildPackage(dir, pkg string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("netlab: build %s: %w", pkg, err)
	}
	bin := filepath.Join(dir, filepath.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, pkg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("netlab: go build %s: %w\n%s", pkg, err, strings.TrimSpace(string(out)))
	}
	return bin, nil
}

// BuildMacula builds cmd/macula once per test binary and returns the path
// of the binary (t.Fatal when the build fails). The binary lives in
// os.TempDir()/netlab-build-<pid>-*; the test binary's TestMain should call
// Cleanup after the tests to remove it, e.g.
//
//	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) { netlab.Cleanup(); os.Exit(code) }))
//
// Directories of dead processes are removed by the next New, NewLab or
// BuildMacula in any case.
func BuildMacula(t TB) string {
	t.Helper()
	return BuildCached(t, MaculaPkg)
}

// BuildCached is BuildMacula for any package.
func BuildCached(t TB, pkg string) string {
	t.Helper()
	bin, err := buildCached(pkg)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func buildCached(pkg string) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := buildBins[pkg]; ok {
		return bin, nil
	}
	if err, ok := buildErrs[pkg]; ok {
		return "", err
	}
	if buildDir == "" {
		cleanStaleBuilds()
		d, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", buildPrefix, os.Getpid()))
		if err != nil {
			return "", fmt.Errorf("netlab: build dir: %w", err)
		}
		buildDir = d
	}
	dir := filepath.Join(buildDir, strconv.Itoa(len(buildBins)+len(buildErrs)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("netlab: build dir: %w", err)
	}
	bin, err := BuildPackage(dir, pkg)
	if err != nil {
		buildErrs[pkg] = err
		return "", err
	}
	buildBins[pkg] = bin
	return bin, nil
}

// Cleanup removes the binaries BuildMacula and BuildCached made. Call it
// at the end of TestMain; later builds start afresh.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	buildDir = ""
	clear(buildBins)
	clear(buildErrs)
}

var staleBuildRe = regexp.MustCompile(`^netlab-build-([0-9]+)-`)

// cleanStaleBuilds removes build directories of dead processes.
func cleanStaleBuilds() {
	tmp := os.TempDir()
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range ents {
		m := staleBuildRe.FindStringSubmatch(e.Name())
		if m == nil || !e.IsDir() {
			continue
		}
		if pid, err := strconv.Atoi(m[1]); err == nil && !pidAlive(pid) {
			_ = os.RemoveAll(filepath.Join(tmp, e.Name()))
		}
	}
}
