// The macula cluster page: renders /cluster, polls it, streams /events.
// No framework, nothing loaded from elsewhere.
"use strict";
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var events = [];

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function tags(t) {
    var td = el("td", { "class": "tags" });
    Object.keys(t || {}).sort().forEach(function (k) {
      td.appendChild(el("span", { "class": "tag" }, k + "=" + t[k]));
    });
    return td;
  }
  function state(n) {
    if (n.state === "self") return "up (this node)";
    if (n.state === "down" || n.state === "left") return n.state + (n.reason && n.reason !== n.state ? " (" + n.reason + ")" : "");
    if (n.state === "unknown") return "not linked here";
    return n.state;
  }

  function render(d) {
    var nb = document.querySelector("#nodes tbody");
    nb.textContent = "";
    d.nodes.forEach(function (n) {
      var tr = el("tr", { "class": "node state-" + n.state, "data-node": n.node, "data-state": n.state });
      tr.appendChild(el("td", {}, n.node));
      tr.appendChild(el("td", {}, n.addr || ""));
      tr.appendChild(el("td", { "class": "state" }, state(n)));
      tr.appendChild(el("td", {}, n.reporting ? String(n.sees) : "no report"));
      tr.appendChild(tags(n.tags));
      nb.appendChild(tr);
    });
    var lb = document.querySelector("#links tbody");
    lb.textContent = "";
    d.links.forEach(function (l) {
      var tr = el("tr", { "class": "link link-" + l.state, "data-a": l.a, "data-b": l.b, "data-state": l.state });
      [l.a, l.b, l.a_sees_b, l.b_sees_a, l.state].forEach(function (v) { tr.appendChild(el("td", {}, v)); });
      lb.appendChild(tr);
    });
    var up = d.nodes.filter(function (n) { return n.state === "self" || n.state === "up"; }).length;
    var bad = d.links.filter(function (l) { return l.state === "asymmetric" || l.state === "missing"; }).length;
    document.getElementById("summary").textContent =
      d.nodes.length + " nodes (" + up + " up here), " + d.links.length + " links" +
      (bad ? ", " + bad + " asymmetric or missing" : "") + "; updated " + new Date(d.time).toLocaleTimeString();
    graph(d);
  }

  function graph(d) {
    var g = document.getElementById("graph");
    g.textContent = "";
    var pos = {}, n = d.nodes.length;
    d.nodes.forEach(function (v, i) {
      var a = 2 * Math.PI * i / Math.max(n, 1) - Math.PI / 2;
      pos[v.node] = [Math.cos(a) * 80, Math.sin(a) * 80];
    });
    d.links.forEach(function (l) {
      var a = pos[l.a], b = pos[l.b];
      if (a && b) g.appendChild(svg("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], "class": l.state }));
    });
    d.nodes.forEach(function (v) {
      var p = pos[v.node];
      g.appendChild(svg("circle", { cx: p[0], cy: p[1], r: 9, "class": "state-" + v.state }));
      var t = svg("text", { x: p[0], y: p[1] + 18, "text-anchor": "middle" });
      t.textContent = v.node;
      g.appendChild(t);
    });
  }

  function renderEvents() {
    var ol = document.getElementById("events");
    ol.textContent = "";
    events.slice().reverse().forEach(function (e) {
      var extra = ["addr", "source", "reason"].filter(function (k) { return e[k]; })
        .map(function (k) { return k + "=" + e[k]; }).join(" ") +
        (e.tags ? " tags=" + Object.keys(e.tags).sort().map(function (k) { return k + "=" + e.tags[k]; }).join(",") : "");
      ol.appendChild(el("li", { "class": e.event }, new Date(e.time).toLocaleTimeString() + " " + e.event + " " + e.node + " " + extra));
    });
  }

  var pending = null;
  function refresh() {
    fetch("cluster", { cache: "no-store" }).then(function (r) { return r.json(); }).then(render)
      .catch(function () { document.getElementById("live").className = "live-off"; document.getElementById("live").textContent = "node unreachable"; });
  }
  function soon() {
    if (!pending) pending = setTimeout(function () { pending = null; refresh(); }, 300);
  }

  var initial = JSON.parse(document.getElementById("initial").textContent);
  events = initial.events || [];
  render(initial);
  renderEvents();
  setTimeout(refresh, 300); // the peers' reports were asked for when this page was served
  setInterval(refresh, 2000);
  if (window.EventSource) {
    var live = document.getElementById("live");
    var es = new EventSource("events");
    es.onopen = function () { events = []; live.className = "live-on"; live.textContent = "live"; };
    es.onerror = function () { live.className = "live-off"; live.textContent = "reconnecting"; };
    es.onmessage = function (m) {
      events.push(JSON.parse(m.data));
      if (events.length > 50) events.shift();
      renderEvents();
      soon();
    };
  }
})();
