package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

func TestPerKey(t *testing.T) {
	l := New(10*time.Second, 3)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("first a refused")
	}
	for i := 0; i < 5; i++ {
		if ok, _ := l.Allow("a"); ok {
			t.Fatal("repeat a allowed within period")
		}
	}
	now = now.Add(10 * time.Second)
	if ok, n := l.Allow("a"); !ok || n != 5 {
		t.Fatalf("a after period: ok=%v suppressed=%d, want true 5", ok, n)
	}
	l.Allow("b")
	l.Allow("c")
	if ok, _ := l.Allow("d"); ok {
		t.Fatal("new key allowed with full table")
	}
	if l.Len() != 3 {
		t.Fatalf("Len = %d, want 3", l.Len())
	}
	now = now.Add(11 * time.Second)
	if ok, _ := l.Allow("d"); !ok {
		t.Fatal("new key refused after sweep")
	}
}

func TestPerKeyBounded(t *testing.T) {
	l := New(time.Hour, 100)
	for i := 0; i < 10000; i++ {
		l.Allow(fmt.Sprint(i))
	}
	if l.Len() > 100 {
		t.Fatalf("table grew to %d", l.Len())
	}
}
