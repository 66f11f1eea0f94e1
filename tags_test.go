package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/mesh"
)

// TestTags: a node's Config.Tags reach its peers through the handshake:
// in their NodeUp events and Connected(); bad tags and tags given twice
// are refused at Start.
func TestTags(t *testing.T) {
	start := func(name string, tags map[string]string, nodes ...string) (*cluster.Cluster, chan cluster.Event) {
		ch := make(chan cluster.Event, 64)
		c, err := cluster.Start(context.Background(), cluster.Config{Strategy: cluster.StrategyStatic, Nodes: nodes, Tags: tags,
			Mesh:    mesh.Config{Name: name, Cookie: "c", Listen: "127.0.0.1:0"},
			OnEvent: func(e cluster.Event) { ch <- e }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, ch
	}
	a, _ := start("a@127.0.0.1", map[string]string{"role": "db"})
	_, eb := start("b@127.0.0.1", map[string]string{"role": "web"}, a.Self().Addr)
	deadline := time.After(10 * time.Second)
	for up := false; !up; {
		select {
		case e := <-eb:
			if e.Kind == cluster.NodeUp {
				if e.Tags["role"] != "db" {
					t.Fatalf("NodeUp tags %v", e.Tags)
				}
				up = true
			}
		case <-deadline:
			t.Fatal("no NodeUp")
		}
	}
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("a never connected b")
		}
		if m := a.Connected(); len(m) == 1 {
			if m[0].Tags["role"] != "web" {
				t.Fatalf("a's member %+v", m[0])
			}
			m[0].Tags["role"] = "changed" // a copy
			break
		}
	}
	if a.Connected()[0].Tags["role"] != "web" || a.Self().Tags["role"] != "db" {
		t.Error("Connected or Self shares its tags with the caller")
	}
	for _, cfg := range []cluster.Config{
		{Tags: map[string]string{"bad key": "v"}},
		{Tags: map[string]string{"a": "1"}, Mesh: mesh.Config{Tags: map[string]string{"b": "2"}}},
	} {
		cfg.Strategy, cfg.Mesh.Name, cfg.Mesh.Cookie, cfg.Mesh.Listen = cluster.StrategyStatic, "x@127.0.0.1", "c", "127.0.0.1:0"
		if c, err := cluster.Start(context.Background(), cfg); !errors.Is(err, mesh.ErrInvalidConfig) {
			if c != nil {
				c.Close()
			}
			t.Errorf("Start(%v): %v, want ErrInvalidConfig", cfg.Tags, err)
		}
	}
}
