// lifeline status page: live updates, "copy as text", keyboard navigation.
//
// The server renders the whole page; this script only keeps it current. It
// polls /api/v1/status and patches the cells whose verdict changed (never the
// whole table), keeps relative and local times ticking, redraws the timeline
// of a service that changed, says when the matrix is wider than the screen,
// keeps the tab's count of incidents, and lets arrow keys move between cells. Every
// value is set with textContent or as a URL parameter: nothing from the
// network is ever parsed as HTML.
(function () {
  "use strict";

  var body = document.body;
  var TICK_MS = 15000;
  var TIMELINE_REFRESH_MS = 300000;
  var RECENT_MAX = 30;

  // --- time formatting (mirrors exporter/page/view.py) ----------------------------
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function ago(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m";
    var h = Math.floor(m / 60); m = m % 60;
    if (h < 48) return m ? h + "h" + pad(m) + "m" : h + "h";
    var d = Math.floor(h / 24); h = h % 24;
    return h ? d + "d" + h + "h" : d + "d";
  }
  function absUtc(date, now) {
    var hm = pad(date.getUTCHours()) + ":" + pad(date.getUTCMinutes()) + " UTC";
    var day = date.toISOString().slice(0, 10);
    return day === now.toISOString().slice(0, 10) ? hm : day + " " + hm;
  }
  function parse(text) {
    if (!text) return null;
    var d = new Date(text);
    return isNaN(d.getTime()) ? null : d;
  }
  function iso(d) { return d.toISOString().replace(/\.\d{3}Z$/, "Z"); }

  function tickTimes() {
    var now = new Date();
    document.querySelectorAll("time.rel").forEach(function (el) {
      var d = parse(el.getAttribute("datetime"));
      if (!d) return;
      var text = ago((now - d) / 1000);
      if (el.textContent !== text) el.textContent = text;
    });
    document.querySelectorAll("time.abs").forEach(function (el) {
      var d = parse(el.getAttribute("datetime"));
      if (!d) return;
      var text = absUtc(d, now);
      if (el.textContent !== text) el.textContent = text;
    });
    document.querySelectorAll("time.local[data-tz]").forEach(function (el) {
      var text;
      try {
        text = new Intl.DateTimeFormat("en-GB", {
          timeZone: el.getAttribute("data-tz"), hour: "2-digit", minute: "2-digit", hourCycle: "h23"
        }).format(now);
      } catch (e) {
        return; // unknown zone in this browser: keep the server's time
      }
      if (el.textContent !== text) el.textContent = text;
    });
  }

  tickTimes();
  setInterval(tickTimes, TICK_MS);
  if (body.classList.contains("drill")) return;

  // --- verdicts: read from the legend the server rendered (one table, not two) ----
  var looks = {};
  document.querySelectorAll("#legend .lg").forEach(function (el) {
    looks[el.getAttribute("data-verdict")] = {
      label: el.getAttribute("data-label"),
      mark: el.getAttribute("data-mark"),
      rank: Number(el.getAttribute("data-rank"))
    };
  });
  function look(v) {
    return Object.prototype.hasOwnProperty.call(looks, v) ? looks[v] : { label: v, mark: "·", rank: 1 };
  }
  function css(v) { return Object.prototype.hasOwnProperty.call(looks, v) ? "v-" + v : "v-unknown"; }

  var SEP = "\u0000";
  function key(s, v, t) { return t === undefined ? s + SEP + v : s + SEP + v + SEP + t; }

  // --- the cells of the matrix, indexed once ---------------------------------------
  var cells = new Map();
  document.querySelectorAll("#matrix td.c").forEach(function (td) {
    var t = td.hasAttribute("data-t") ? td.getAttribute("data-t") : undefined;
    cells.set(key(td.getAttribute("data-s"), td.getAttribute("data-v"), t), td);
  });

  function worst(list) {
    var best = null;
    list.forEach(function (r) {
      if (best === null) { best = r; return; }
      var a = look(r.verdict).rank, b = look(best.verdict).rank;
      if (a > b || (a === b && (r.since || "~") < (best.since || "~"))) best = r;
    });
    return best;
  }

  function drillHref(r) {
    return "/target?" + new URLSearchParams({ service: r.service, target: r.target, vantage: r.vantage });
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function sinceSpan(since, now) {
    var d = parse(since);
    if (!d) return el("span", "since", "since unknown");
    var span = el("span", "since");
    var rel = el("time", "rel", ago((now - d) / 1000));
    rel.setAttribute("datetime", iso(d));
    var abs = el("time", "abs", absUtc(d, now));
    abs.setAttribute("datetime", iso(d));
    span.append("for ", rel, " · since ", abs);
    return span;
  }

  // Replace one cell's content; keeps the element (and focus) so the rest of the table is untouched.
  function fill(td, w, n, total, perTarget, now) {
    var l = look(w.verdict);
    var old = td.querySelector("a");
    var hadFocus = old !== null && document.activeElement === old;
    var a = el("a");
    a.href = drillHref(w);
    a.title = w.target + ": " + (w.reason || "");
    a.tabIndex = old ? old.tabIndex : -1;
    var mark = el("span", "mark", l.mark);
    mark.setAttribute("aria-hidden", "true");
    a.append(mark, " ", el("span", "vl", l.label));
    if (!perTarget && n < total) {
      var c = el("span", "n", n + "/" + total);
      c.title = "targets with this verdict";
      a.append(" ", c);
    }
    a.append(" ", sinceSpan(w.since, now));
    td.className = "c " + css(w.verdict);
    td.setAttribute("data-verdict", w.verdict);
    td.setAttribute("data-since", w.since || "");
    td.setAttribute("data-n", perTarget || n === total ? "" : n + "/" + total);
    td.replaceChildren(a);
    if (hadFocus) a.focus();
  }

  function stateOf(td) {
    return [td.getAttribute("data-verdict"), td.getAttribute("data-since"), td.getAttribute("data-n") || ""];
  }

  // Record what the server rendered as each summary cell's count, so the first poll changes nothing.
  cells.forEach(function (td) {
    if (td.hasAttribute("data-t")) return;
    var n = td.querySelector(".n");
    td.setAttribute("data-n", n ? n.textContent : "");
  });

  var notice = document.getElementById("notice");
  function say(text) { notice.textContent = text; }

  function groupResults(results) {
    var groups = new Map();
    results.forEach(function (r) {
      var k = key(r.service, r.vantage);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(r);
    });
    return groups;
  }

  function summaryState(list) {
    var w = worst(list);
    var n = list.filter(function (r) { return r.verdict === w.verdict; }).length;
    return { w: w, n: n, total: list.length, count: n < list.length ? n + "/" + list.length : "" };
  }

  // ?only=problems: vantages said once above the matrix (down), services hidden while ok
  var folded = new Set();
  document.querySelectorAll("p.folded[data-v]").forEach(function (p) { folded.add(p.getAttribute("data-v")); });
  var onlyProblems = body.classList.contains("only-problems");

  function applyStatus(doc) {
    var now = new Date();
    var all = Array.isArray(doc.results) ? doc.results : [];
    var back = new Set();  // a folded vantage with a verdict other than vantage_down: not down now
    var results = all.filter(function (r) {
      if (!folded.has(r.vantage)) return true;
      if (r.verdict !== "vantage_down") back.add(r.vantage);
      return false;
    });
    var changed = [];
    var unknown = 0;
    results.forEach(function (r) {
      var td = cells.get(key(r.service, r.vantage, r.target));
      if (!td) return;
      var st = stateOf(td);
      if (st[0] !== r.verdict || st[1] !== (r.since || "")) fill(td, r, 1, 1, true, now);
    });
    groupResults(results).forEach(function (list, k) {
      var td = cells.get(k);
      if (!td) {
        // a service hidden by ?only=problems is news only once it has a problem
        if (!onlyProblems || list.some(function (r) { return r.verdict !== "ok"; })) unknown += 1;
        return;
      }
      var s = summaryState(list);
      var st = stateOf(td);
      if (st[0] === s.w.verdict && st[1] === (s.w.since || "") && st[2] === s.count) return;
      var before = st[0];
      fill(td, s.w, s.n, s.total, false, now);
      if (before !== s.w.verdict) changed.push({ r: s.w, before: before });
    });
    updateCounts(all);
    var updated = parse(doc.time) || now;
    var up = document.getElementById("updated");
    up.setAttribute("datetime", iso(updated));
    up.textContent = updated.toISOString().slice(0, 19).replace("T", " ") + " UTC";
    if (changed.length) {
      changed.forEach(function (c) { addChange(c.r, c.before, now); });
      var stale = document.getElementById("now-stale");  // the "Now" list is drawn by the server
      if (stale) stale.hidden = false;
      say(changed.length + " changed: " + changed.slice(0, 5).map(function (c) {
        return c.r.service + " at " + c.r.vantage + " now " + look(c.r.verdict).label;
      }).join("; "));
      var seen = new Set(changed.map(function (c) { return c.r.service; }));
      seen.forEach(function (s) { refreshTimeline(s); });
    }
    if (unknown) say("New services or vantages appeared: reload the page to see them.");
    if (back.size) {
      var staleNow = document.getElementById("now-stale");
      if (staleNow) staleNow.hidden = false;
      say(Array.from(back).join(", ") + " no longer down everywhere: reload the page for its column.");
    }
  }

  function updateCounts(results) {
    var problems = results.filter(function (r) { return r.verdict !== "ok"; }).length;
    var np = document.getElementById("n-problems"), nt = document.getElementById("n-total");
    if (np && np.textContent !== String(problems)) np.textContent = String(problems);
    if (nt && nt.textContent !== String(results.length)) nt.textContent = String(results.length);
    var n = ongoingIncidents(results);
    var title = (n ? "(" + n + ") " : "") + "lifeline status";
    if (document.title !== title) document.title = title;
  }

  // How many incidents are going on, as exporter/incidents.py groups them: a down vantage is
  // one, an outage one per service, anything else one per (service, vantage, verdict).
  function ongoingIncidents(results) {
    var groups = new Set();
    results.forEach(function (r) {
      if (r.verdict === "ok") return;
      if (r.verdict === "vantage_down") groups.add(key("vantage_down", r.vantage));
      else if (r.verdict === "service_down") groups.add(key("service_down", r.service));
      else groups.add(key(r.verdict, r.service, r.vantage));
    });
    return groups.size;
  }

  function addChange(r, before, now) {
    var list = document.getElementById("changes");
    if (!list) return;
    var none = list.querySelector(".none");
    if (none) none.remove();
    var li = el("li");
    var chip = el("span", css(r.verdict) + " chip", look(r.verdict).label);
    var a = el("a");
    a.href = drillHref(r);
    a.append(el("span", "tname", r.target));
    li.append(el("span", "sname", r.service), " at ", el("span", "vname", r.vantage), ": ");
    if (before) li.append(look(before).label + " → ");
    li.append(chip, " ", sinceSpan(r.since, now), " ", a);
    list.prepend(li);
    while (list.children.length > RECENT_MAX) list.lastElementChild.remove();
  }

  // --- timeline bands -------------------------------------------------------------
  var SVGNS = "http://www.w3.org/2000/svg";
  var hours = body.getAttribute("data-hours") || "24";

  // As render.py's band_row: a band that is not ok is at least MIN_PROBLEM_W wide (a fresh
  // incident shows), drawn over the ok bands, and said in words beside the row.
  var MIN_PROBLEM_W = 15;
  function hhmm(d) { return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()); }
  function drawBands(svg, bands, start, end) {
    var span = (end - start) || 1;
    var okRects = [], badRects = [], words = [];
    bands.forEach(function (b) {
      var s = parse(b.start), e = parse(b.end);
      if (!s || !e) return;
      var problem = b.verdict !== "ok";
      var w = Math.max((e - s) / span * 1000, problem ? MIN_PROBLEM_W : 0.5);
      var x = Math.max(0, Math.min((s - start) / span * 1000, 1000 - w));
      var r = document.createElementNS(SVGNS, "rect");
      r.setAttribute("class", css(b.verdict));
      r.setAttribute("x", x.toFixed(2));
      r.setAttribute("y", "0");
      r.setAttribute("width", w.toFixed(2));
      r.setAttribute("height", "10");
      var t = document.createElementNS(SVGNS, "title");
      t.textContent = look(b.verdict).label + " " + b.start + " – " + b.end;
      r.append(t);
      (problem ? badRects : okRects).push(r);
      if (problem) words.push(look(b.verdict).label + " from " + hhmm(s));
    });
    svg.replaceChildren.apply(svg, okRects.concat(badRects));
    var what = svg.parentElement && svg.parentElement.querySelector(".tl-what");
    if (what) what.textContent = words.join("; ");
  }

  function applyTimeline(doc) {
    var start = parse(doc.start), end = parse(doc.end);
    if (!start || !end || !Array.isArray(doc.services)) return;
    doc.services.forEach(function (svc) {
      var sec = Array.prototype.find.call(document.querySelectorAll("section.tl"), function (s) {
        return s.getAttribute("data-s") === svc.service;
      });
      if (!sec) return;
      (svc.vantages || []).forEach(function (v) {
        var row = Array.prototype.find.call(sec.querySelectorAll(".tl-row"), function (r) {
          return r.getAttribute("data-v") === v.vantage;
        });
        var svg = row && row.querySelector("svg");
        if (svg) drawBands(svg, v.bands || [], start, end);
      });
    });
  }

  function refreshTimeline(service) {
    var q = new URLSearchParams({ hours: hours });
    if (service) q.set("service", service);
    fetch("/api/v1/timeline?" + q, { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (doc) { if (doc) applyTimeline(doc); })
      .catch(function () { /* the next poll tries again */ });
  }
  setInterval(function () { refreshTimeline(null); }, TIMELINE_REFRESH_MS);

  // --- polling ------------------------------------------------------------------------
  var pollMs = Number(body.getAttribute("data-poll-ms")) || 5000;
  var delay = pollMs;
  var live = document.getElementById("live");
  var failedSince = null;

  function poll() {
    fetch("/api/v1/status", { cache: "no-cache", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (doc) {
        applyStatus(doc);
        failedSince = null;
        delay = pollMs;
        var text = "live: checks for news every " + Math.round(pollMs / 1000) + " s";
        if (live.textContent !== text) live.textContent = text;
        live.className = "live ok";
      })
      .catch(function () {
        if (!failedSince) failedSince = new Date();
        delay = Math.min(delay * 2, 60000);
        live.textContent = "cannot reach the exporter since " + absUtc(failedSince, new Date()) +
          "; retrying; what you see may be stale";
        live.className = "live bad";
      })
      .then(function () { setTimeout(poll, delay); });
  }
  live.textContent = "live: checks for news every " + Math.round(pollMs / 1000) + " s";
  setTimeout(poll, pollMs);

  // --- copy as text -------------------------------------------------------------------
  var copy = document.getElementById("copy");
  var out = document.getElementById("copy-out");
  copy.hidden = false;
  copy.addEventListener("click", function () {
    fetch("/api/v1/summary.txt", { cache: "no-store" })
      .then(function (r) { return r.text(); })
      .then(function (text) {
        var done = function () { say("Summary copied (" + text.trim().split("\n").length + " lines)."); };
        var manual = function () {
          out.value = text;
          out.hidden = false;
          out.focus();
          out.select();
          say("Copying is not allowed here: the summary is selected below, press Ctrl+C.");
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, manual);
        } else {
          manual();
        }
      })
      .catch(function () { say("Could not fetch the summary."); });
  });

  // --- a matrix wider than the screen says so (the line above it, a shadow at the cut edge)
  var box = document.getElementById("matrix-box");
  var wrapEl = box && box.querySelector(".matrix-wrap");
  function cue() {
    if (!wrapEl) return;
    var over = wrapEl.scrollWidth > wrapEl.clientWidth + 1;
    box.classList.toggle("overflows", over);
    box.classList.toggle("fits", !over);
    box.classList.toggle("more-right", over && wrapEl.scrollLeft + wrapEl.clientWidth < wrapEl.scrollWidth - 1);
  }
  if (wrapEl) {
    wrapEl.addEventListener("scroll", cue, { passive: true });
    window.addEventListener("resize", cue);
    cue();
  }

  // --- expand a service's targets -----------------------------------------------------
  document.querySelectorAll("#matrix a.expand").forEach(function (a) {
    var tbody = document.getElementById(a.getAttribute("aria-controls"));
    if (tbody && location.hash && decodeURIComponent(location.hash.slice(1)) === tbody.id) {
      tbody.classList.add("open");
      a.setAttribute("aria-expanded", "true");
    }
    a.addEventListener("click", function (ev) {
      if (!tbody) return;
      ev.preventDefault();
      var open = !tbody.classList.contains("open");
      tbody.classList.toggle("open", open);
      tbody.classList.toggle("closed", !open);
      a.setAttribute("aria-expanded", open ? "true" : "false");
    });
  });

  // --- keyboard: one tab stop in the matrix, arrows move between cells ---------------
  var matrix = document.getElementById("matrix");
  var links = matrix ? matrix.querySelectorAll("td.c a") : [];
  links.forEach(function (a, i) { a.tabIndex = i === 0 ? 0 : -1; });

  function visibleRows() {
    return Array.prototype.filter.call(matrix.tBodies, function () { return true; })
      .reduce(function (acc, tb) {
        return acc.concat(Array.prototype.filter.call(tb.rows, function (r) { return r.offsetParent !== null; }));
      }, []);
  }
  function focusCell(td) {
    var a = td && td.querySelector("a");
    if (!a) return false;
    matrix.querySelectorAll('td.c a[tabindex="0"]').forEach(function (x) { x.tabIndex = -1; });
    a.tabIndex = 0;
    a.focus();
    return true;
  }
  if (matrix) {
    matrix.addEventListener("keydown", function (ev) {
      var td = ev.target.closest && ev.target.closest("td.c");
      if (!td) return;
      var row = td.parentElement;
      var col = td.cellIndex;
      var rows = visibleRows();
      var ri = rows.indexOf(row);
      var next = null;
      if (ev.key === "ArrowRight") next = row.cells[col + 1];
      else if (ev.key === "ArrowLeft") next = col > 1 ? row.cells[col - 1] : null;
      else if (ev.key === "ArrowDown") next = ri + 1 < rows.length ? rows[ri + 1].cells[col] : null;
      else if (ev.key === "ArrowUp") next = ri > 0 ? rows[ri - 1].cells[col] : null;
      else if (ev.key === "Home") next = row.cells[1];
      else if (ev.key === "End") next = row.cells[row.cells.length - 1];
      else return;
      ev.preventDefault();
      focusCell(next);
    });
    matrix.addEventListener("focusin", function (ev) {
      var a = ev.target;
      if (a.tagName !== "A" || !a.closest("td.c") || a.tabIndex === 0) return;
      matrix.querySelectorAll('td.c a[tabindex="0"]').forEach(function (x) { x.tabIndex = -1; });
      a.tabIndex = 0;
    });
  }
})();
