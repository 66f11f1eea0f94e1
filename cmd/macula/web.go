package main

import (
	"embed"
	"encoding/json"
	"html/template"
	"net/http"
	"time"

	cluster "github.com/macula-io/cluster"
)

// The page at / shows the cluster view (see view.go); it is served from
// the binary, works offline and loads nothing from elsewhere. Its first
// state is inlined in the HTML, so it shows the cluster before any script
// runs; the script then polls /cluster and streams /events.

//go:embed web
var webFS embed.FS

var pageTmpl = template.Must(template.ParseFS(webFS, "web/index.html"))

// sseKeepalive is how often an idle /events stream sends a comment, so
// that proxies and the browser keep it open.
const sseKeepalive = 15 * time.Second

// webUI is the state the page needs beside the cluster.
type webUI struct {
	view *clusterView
	hub  *eventHub
}

func (u *webUI) register(mux *http.ServeMux, c *cluster.Cluster, recent *recentTable) {
	static := http.FileServerFS(webFS)
	for _, f := range []string{"app.js", "style.css"} {
		mux.HandleFunc("GET /"+f, func(w http.ResponseWriter, r *http.Request) {
			r.URL.Path = "/web/" + f
			setPageHeaders(w)
			static.ServeHTTP(w, r)
		})
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		pageTmpl.Execute(w, map[string]any{"Self": c.Self().Node, "Initial": u.view.snapshot(c, recent, u.hub)})
	})
	mux.HandleFunc("GET /cluster", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(u.view.snapshot(c, recent, u.hub))
	})
	mux.HandleFunc("GET /events", u.serveEvents)
}

func setPageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
}

// serveEvents streams membership events as Server-Sent Events: the recent
// ones first, then each new one, as `macula run --json` prints them. The
// listener's write timeout would cut a stream, so this handler lifts the
// deadlines of its own connection; at most hubSubscribers streams are open.
func (u *webUI) serveEvents(w http.ResponseWriter, r *http.Request) {
	ch, backlog, ok := u.hub.subscribe()
	if !ok {
		http.Error(w, "too many event streams open", http.StatusServiceUnavailable)
		return
	}
	defer u.hub.unsubscribe(ch)
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Time{}); err != nil {
		http.Error(w, "streaming not supported", http.StatusInternalServerError)
		return
	}
	// The read deadline would end the request's context.
	rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(m map[string]any) error {
		b, _ := json.Marshal(m)
		// Each write gets its own deadline: a stuck client is dropped.
		rc.SetWriteDeadline(time.Now().Add(httpWriteTimeout))
		if _, err := w.Write(append(append([]byte("data: "), b...), '\n', '\n')); err != nil {
			return err
		}
		return rc.Flush()
	}
	w.Write([]byte("retry: 2000\n\n"))
	for _, m := range backlog {
		if send(m) != nil {
			return
		}
	}
	if rc.Flush() != nil {
		return
	}
	keep := time.NewTicker(sseKeepalive)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case m := <-ch:
			if send(m) != nil {
				return
			}
		case <-keep.C:
			rc.SetWriteDeadline(time.Now().Add(httpWriteTimeout))
			if _, err := w.Write([]byte(": keepalive\n\n")); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
