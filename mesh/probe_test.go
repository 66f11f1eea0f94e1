package mesh

import (
	"context"
	"testing"
	"time"
)

// TestProbe: the right cookie is accepted (the node logs the prober up,
// then left), a wrong one is refused with HSBadCookie.
func TestProbe(t *testing.T) {
	a, r := startNode(t, "a@127.0.0.1", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := Probe(ctx, a.Addr(), "doctor@127.0.0.1", "127.0.0.1:1", testCookie, nil)
	if err != nil || res.Node != "a@127.0.0.1" || res.Reason != "" {
		t.Fatalf("right cookie: %+v, %v", res, err)
	}
	r.waitEvent(t, 5*time.Second, NodeDown, "doctor@127.0.0.1", ReasonLeft)
	res, err = Probe(ctx, a.Addr(), "doctor@127.0.0.1", "127.0.0.1:1", "wrong", nil)
	if err == nil || res.Reason != HSBadCookie {
		t.Fatalf("wrong cookie: %+v, %v", res, err)
	}
}
