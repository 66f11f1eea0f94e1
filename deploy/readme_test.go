package deploy_test

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeKubernetes: the Kubernetes YAML in the top-level README is made
// of excerpts of kubernetes.yaml, and each excerpt (the README block split
// at "---") is in the file as it is: the same lines, in order, contiguous,
// at one indentation offset. Comment and blank lines are ignored on both
// sides, so the README and the file may comment differently.
func TestReadmeKubernetes(t *testing.T) {
	b, err := os.ReadFile("../README.md") // not readFile: the README's Go examples have tabs
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	manifest := codeLines(readFile(t, "kubernetes.yaml"))
	const anchor = "excerpts of [`deploy/kubernetes.yaml`](deploy/kubernetes.yaml)"
	i := strings.Index(readme, anchor)
	if i < 0 {
		t.Fatalf("README.md has no %q", anchor)
	}
	rest := readme[i:]
	start := strings.Index(rest, "```yaml\n")
	if start < 0 {
		t.Fatal("README.md: no ```yaml block after the Kubernetes excerpt anchor")
	}
	rest = rest[start+len("```yaml\n"):]
	end := strings.Index(rest, "```\n")
	if end < 0 {
		t.Fatal("README.md: the Kubernetes yaml block is not closed")
	}
	block := rest[:end]
	for n, chunk := range strings.Split(block, "\n---\n") {
		lines := codeLines(chunk)
		if len(lines) == 0 {
			t.Errorf("README.md Kubernetes excerpt %d is empty", n+1)
			continue
		}
		if !containsRun(manifest, lines) {
			t.Errorf("README.md Kubernetes excerpt %d is not in deploy/kubernetes.yaml as it is:\n%s",
				n+1, strings.Join(lines, "\n"))
		}
	}
}

// codeLines drops blank and comment-only lines and trailing spaces.
func codeLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimRight(l, " ")
		if t := strings.TrimSpace(l); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		out = append(out, l)
	}
	return out
}

func indent(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }

// containsRun reports whether want appears in lines as a contiguous run,
// every line shifted right by the same number of spaces.
func containsRun(lines, want []string) bool {
	for i := 0; i+len(want) <= len(lines); i++ {
		shift := indent(lines[i]) - indent(want[0])
		if shift < 0 {
			continue
		}
		pad := strings.Repeat(" ", shift)
		ok := true
		for k, w := range want {
			if lines[i+k] != pad+w {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
