package mesh

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"testing"
)

// TestStatsZeroSeries: the labelled counters hold every known reason at 0
// from Start, so /metrics shows each series before its first event, and
// the reasons are the ones doc.go documents.
func TestStatsZeroSeries(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	// Rows of doc.go's table: "//	reason  HSConstant  meaning".
	var documented []string
	for _, m := range regexp.MustCompile(`(?m)^//\t([a-z_]+) +HS[A-Za-z]+ `).FindAllSubmatch(doc, -1) {
		if r := string(m[1]); r != string(HSDuplicate) && r != string(HSSelf) { // never counted
			documented = append(documented, r)
		}
	}
	slices.Sort(documented)

	a, _ := startNode(t, "a@127.0.0.1", nil)
	st := a.Stats()
	check := func(what string, got map[string]uint64, want []string) {
		t.Helper()
		keys := slices.Sorted(maps.Keys(got))
		slices.Sort(want)
		if !slices.Equal(keys, want) {
			t.Errorf("%s keys %v, want %v", what, keys, want)
		}
		if nz := nonZero(got); len(nz) != 0 {
			t.Errorf("%s non-zero at start: %v", what, nz)
		}
	}
	check("HandshakeFailures", st.HandshakeFailures, documented)
	check("ProtocolErrors", st.ProtocolErrors, []string{"frame_too_large", "malformed", "unexpected_frame", "tampered"})
	check("LinksDown", st.LinksDown, []string{"closed", "timeout", "left", "restarted", "disconnected", "shutdown"})
	if len(documented) != len(handshakeFailureReasons) {
		t.Errorf("doc.go table lists %d failure reasons, want %d: %v", len(documented), len(handshakeFailureReasons), documented)
	}
	if _, ok := st.HandshakeFailures[string(HSDuplicate)]; ok {
		t.Error("HandshakeFailures has a duplicate series; duplicates belong to DuplicateLinks")
	}

	// Stats hands out copies.
	st.HandshakeFailures["timeout"] = 99
	if got := a.Stats().HandshakeFailures["timeout"]; got != 0 {
		t.Errorf("Stats map is not a copy: timeout = %d", got)
	}
}
