/* adaptvc ui: draws what the JSON endpoints return. Plain JavaScript, no libraries, no network beyond this
 * server. Every number shown comes from the server (the same functions as the CLI's --json); this file only
 * lays out, formats and sorts. */
"use strict";

(function () {
  const main = document.getElementById("main");
  const tip = document.getElementById("tip");
  const SVGNS = "http://www.w3.org/2000/svg";
  const ROW = 28;   // history row height (px), as in app.css
  const LANE = 14;  // graph lane width (px)
  const LANE_COLOURS = ["#2f6fde", "#1a7f37", "#e8590c", "#8250df", "#d6336c", "#0c8599", "#9a6700", "#495057"];
  // matplotlib's viridis at nine points: the colours of `diff --plot`
  const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];
  const NOT_COMPARABLE = "#d0d0d0";

  // -- small helpers ------------------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  // Replace an element's children (arrays flattened, null and false left out).
  function fill(el, ...children) {
    el.replaceChildren();
    append(el, children);
  }

  function query() { return new URLSearchParams(location.search); }

  function url(route, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
    const text = q.toString();
    return text ? `${route}?${text}` : route;
  }

  async function getJSON(path) {
    const response = await fetch(path, {credentials: "same-origin"});
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
    return {status: response.status, body: body};
  }

  function showError(message) {
    fill(main, h("div", {class: "error", id: "error"},
      h("h1", {text: "Error"}), h("p", {text: message}), h("p", {}, h("a", {href: "/", text: "Back to the history"}))));
    document.body.dataset.ready = "error";
  }

  const ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};

  // Text made safe for HTML markup (content and quoted attribute values).
  function esc(text) { return String(text).replace(/[&<>"']/g, (ch) => ESCAPES[ch]); }

  function short(id) { return id ? id.slice(0, 12) : "–"; }

  function num(x, digits) {
    if (x === null || x === undefined) return "–";
    if (typeof x !== "number") return String(x);
    if (x !== 0 && (Math.abs(x) >= 1e4 || Math.abs(x) < 1e-3)) return x.toExponential((digits || 4) - 1);
    return Number(x.toPrecision(digits || 4)).toString();
  }

  function bytes(n) {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  function when(ts) {
    const d = new Date(ts);
    if (isNaN(d)) return ts;
    const p = (x) => String(x).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
  }

  function firstLine(text) { return (text || "").split("\n")[0]; }

  function showTip(event, text) {
    tip.textContent = text;
    tip.hidden = false;
    const pad = 14;
    const w = tip.offsetWidth, hgt = tip.offsetHeight;
    let x = event.clientX + pad, y = event.clientY + pad;
    if (x + w > window.innerWidth - 4) x = event.clientX - w - pad;
    if (y + hgt > window.innerHeight - 4) y = event.clientY - hgt - pad;
    tip.style.left = `${Math.max(4, x)}px`;
    tip.style.top = `${Math.max(4, y)}px`;
  }

  function hideTip() { tip.hidden = true; }

  function hexToRgb(hex) { return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)); }

  const VIRIDIS_RGB = VIRIDIS.map(hexToRgb);

  function colour(value, vmax) {
    if (value === null || value === undefined) return NOT_COMPARABLE;
    const t = Math.max(0, Math.min(1, vmax > 0 ? value / vmax : 0)) * (VIRIDIS_RGB.length - 1);
    const i = Math.min(Math.floor(t), VIRIDIS_RGB.length - 2);
    const f = t - i;
    const a = VIRIDIS_RGB[i], b = VIRIDIS_RGB[i + 1];
    return `rgb(${a.map((c, k) => Math.round(c + (b[k] - c) * f)).join(",")})`;
  }

  function refKind(label) {
    if (label.startsWith("tag: ")) return ["tag", label.slice(5)];
    if (label.startsWith("HEAD -> ")) return ["head", label.slice(8)];
    if (label === "HEAD") return ["head", label];
    return [label.includes("/") ? "remote" : "branch", label];
  }

  function refBadge(label) {
    const [kind, text] = refKind(label);
    return h("span", {class: `ref ${kind}`, text: text, title: label});
  }

  function refBadgeHtml(label) {
    const [kind, text] = refKind(label);
    return `<span class="ref ${kind}" title="${esc(label)}">${esc(text)}</span>`;
  }

  function section(title, ...children) { return [h("h2", {text: title}), ...children]; }

  // A table sorted by clicking a column head; `columns`: {key, label, num, render(row)}; rows are objects.
  function sortableTable(columns, rows, opts) {
    const options = opts || {};
    const table = h("table", {class: "grid sortable", id: options.id || null});
    const head = h("tr");
    const body = h("tbody");
    let sortKey = options.sortKey || null, dir = options.dir || -1;
    function value(row, col) { return col.sortValue ? col.sortValue(row) : row[col.key]; }
    function draw() {
      const col = columns.find((c) => c.key === sortKey);
      const sorted = rows.slice();
      if (col) {
        sorted.sort((x, y) => {
          const a = value(x, col), b = value(y, col);
          if (a === null || a === undefined) return (b === null || b === undefined) ? 0 : 1;
          if (b === null || b === undefined) return -1;
          return (a < b ? -1 : a > b ? 1 : 0) * dir;
        });
      }
      body.replaceChildren(...sorted.map((row) => h("tr", {"data-name": row.name || null},
        columns.map((c) => h("td", {class: c.num ? "num" : (c.cls || null), title: c.title ? c.title(row) : null},
          c.render ? c.render(row) : (c.num ? num(row[c.key]) : row[c.key]))))));
      for (const th of head.children) {
        th.classList.toggle("sorted-asc", th.dataset.key === sortKey && dir === 1);
        th.classList.toggle("sorted-desc", th.dataset.key === sortKey && dir === -1);
      }
    }
    for (const c of columns) {
      head.append(h("th", {class: c.num ? "num" : null, "data-key": c.key, text: c.label,
        onclick: () => { dir = sortKey === c.key ? -dir : (c.num ? -1 : 1); sortKey = c.key; draw(); }}));
    }
    table.append(h("thead", {}, head), body);
    draw();
    return table;
  }

  // -- history ------------------------------------------------------------------------------------------------
  // Half of a line from lane `from` (centre of one row) to lane `to` (centre of the next row): the cubic from
  // (xf, R/2) to (xt, 3R/2) with vertical tangents, split at its midpoint so each row draws its own part.
  function lowerHalf(xf, xt) {
    const m = (xf + xt) / 2;
    return `M${xf},${ROW / 2} C${xf},${ROW * 0.75} ${(3 * xf + xt) / 4},${ROW * 0.875} ${m},${ROW}`;
  }

  function upperHalf(xf, xt) {
    const m = (xf + xt) / 2;
    return `M${m},0 C${(xf + 3 * xt) / 4},${ROW * 0.125} ${xt},${ROW * 0.25} ${xt},${ROW / 2}`;
  }

  function laneX(lane) { return 8 + lane * LANE; }

  function laneColour(lane) { return LANE_COLOURS[lane % LANE_COLOURS.length]; }

  // One row's part of the graph, as SVG markup (the history table is built as one string: 1,000 rows render
  // in a fraction of the time DOM calls take). Only numbers and fixed colours go into it.
  function graphCell(row, previous, width, isMerge) {
    const parts = [`<svg class="lanes" width="${width}" height="${ROW}">`];
    if (previous) {
      for (const e of previous.edges) {
        parts.push(`<path class="edge" d="${upperHalf(laneX(e.from), laneX(e.to))}" stroke="${laneColour(e.to)}"/>`);
      }
    }
    for (const e of row.edges) {
      parts.push(`<path class="edge" d="${lowerHalf(laneX(e.from), laneX(e.to))}" stroke="${laneColour(e.to)}"/>`);
    }
    const c = laneColour(row.lane);
    parts.push(`<circle class="node" cx="${laneX(row.lane)}" cy="${ROW / 2}" r="${isMerge ? 5 : 4.5}" ` +
      `fill="${isMerge ? "#fff" : c}" stroke="${c}" data-id="${esc(row.id)}"/></svg>`);
    return parts.join("");
  }

  function metricsText(commit) {
    const meta = commit.metadata || {};
    const parts = [];
    if (typeof meta.step === "number") parts.push(`step ${meta.step}`);
    const metrics = meta.metrics && typeof meta.metrics === "object" ? meta.metrics : {};
    for (const [k, v] of Object.entries(metrics)) parts.push(`${k}=${num(v)}`);
    return parts.join(" · ");
  }

  async function historyPage() {
    const {body: data} = await getJSON("/api/history");
    const fetched = performance.now();
    document.title = `adaptvc: ${data.repository}`;
    document.getElementById("where").textContent = data.repository;
    const commits = data.commits;
    const byId = new Map(commits.map((c) => [c.id, c]));
    const order = new Map(commits.map((c, i) => [c.id, i]));
    const selected = [];

    const compareButton = h("button", {class: "primary", id: "compare", disabled: true, text: "Compare selected"});
    const runButton = h("button", {id: "run", disabled: true, text: "Across these versions"});
    const hint = h("span", {class: "muted", id: "hint",
      text: "Tick two versions (or shift-click two points on the chart) to compare them."});
    const rowsById = new Map();
    const chartHolder = h("div", {class: "panel chart", id: "chart"});
    let chart = null;

    function pick(id) {
      const at = selected.indexOf(id);
      if (at >= 0) selected.splice(at, 1);
      else { selected.push(id); if (selected.length > 2) selected.shift(); }
      for (const [oid, tr] of rowsById) {
        const on = selected.includes(oid);
        tr.classList.toggle("selected", on);
        tr.querySelector("input").checked = on;
      }
      if (chart) chart.mark(selected);
      const ready = selected.length === 2;
      compareButton.disabled = runButton.disabled = !ready;
      if (ready) {
        const [older, newer] = selected.slice().sort((x, y) => order.get(y) - order.get(x));
        hint.textContent = `${short(older)} → ${short(newer)}`;
      } else {
        hint.textContent = selected.length ? `${short(selected[0])} and one more…`
          : "Tick two versions (or shift-click two points on the chart) to compare them.";
      }
    }

    function pair() { return selected.slice().sort((x, y) => order.get(y) - order.get(x)); }
    compareButton.addEventListener("click", () => { const [a, b] = pair(); location.href = url("/compare", {a, b}); });
    runButton.addEventListener("click", () => { const [a, b] = pair(); location.href = url("/run", {from: a, to: b}); });

    const width = laneX(Math.max(1, data.graph.width)) + 2;
    const table = h("div", {class: "history", id: "history"},
      h("div", {class: "hrow head"}, ["", "", "version", "message", "time", "base model", "metrics"]
        .map((t) => h("span", {text: t}))));
    table.style.setProperty("--graph", `${width}px`);
    const rows = data.graph.rows;
    const html = rows.map((row, i) => {
      const c = byId.get(row.id);
      const labels = (data.decorations[c.id] || []).map(refBadgeHtml).join("");
      const metrics = esc(metricsText(c));
      const base = esc(c.base.name_or_path || "");
      return `<div class="hrow commit" data-id="${esc(c.id)}"><span class="pick"><input type="checkbox" ` +
        `title="select to compare"></span>` +
        `<span class="graph">${graphCell(row, i > 0 ? rows[i - 1] : null, width, c.parents.length > 1)}</span>` +
        `<span class="mono"><a href="${esc(url("/version", {rev: c.id}))}">${esc(short(c.id))}</a></span>` +
        `<span class="msg" title="${esc(c.message)}">${labels}${esc(firstLine(c.message))}</span>` +
        `<span class="muted" title="${esc(c.timestamp)}">${esc(when(c.timestamp))}</span>` +
        `<span class="muted" title="${base}">${base || "–"}</span>` +
        `<span class="muted" title="${metrics}">${metrics}</span></div>`;
    });
    const chunks = [];
    for (let i = 0; i < html.length; i += 50) {
      const n = Math.min(50, html.length - i);
      chunks.push(`<div class="chunk"${n < 50 ? ` data-rows="${n}"` : ""}>${html.slice(i, i + 50).join("")}</div>`);
    }
    const body = h("div", {class: "rows"});
    body.innerHTML = chunks.join("");
    for (const chunk of body.querySelectorAll(".chunk[data-rows]")) {
      chunk.style.containIntrinsicSize = `auto ${Number(chunk.dataset.rows) * ROW}px`;
    }
    for (const tr of body.querySelectorAll(".commit")) rowsById.set(tr.dataset.id, tr);
    body.addEventListener("change", (ev) => {
      const tr = ev.target.closest(".commit");
      if (tr) pick(tr.dataset.id);
    });
    table.append(body);

    const status = h("span", {class: "muted", id: "worktree"});
    const head = data.head ? `HEAD ${short(data.head)}` + (data.branch ? ` on ${data.branch}` : " (detached)")
      : "no commits yet";
    fill(main,
      h("h1", {}, data.repository, " ", h("span", {class: "muted", text: `· ${commits.length} versions · ${head}`})),
      h("div", {class: "toolbar"}, compareButton, runButton, hint, status),
      Object.keys(data.metrics).length ? chartHolder : null,
      data.truncated ? h("p", {class: "muted", text: `Showing the newest ${commits.length} versions.`}) : null,
      table);
    if (Object.keys(data.metrics).length) chart = metricsChart(chartHolder, data.metrics, byId, pick);
    document.body.offsetHeight;  // lay the page out before taking the time
    window.adaptvcRendered = performance.now();
    window.adaptvcTimings = {fetched: fetched, rendered: window.adaptvcRendered};
    document.body.dataset.ready = "history";
    getJSON("/api/status").then(({body: st}) => {
      if (st.clean) status.textContent = "· work tree clean";
      else status.textContent = `· work tree: ${st.modified.length} tensors modified, ${st.added.length} added, ` +
        `${st.removed.length} removed${st.config_changed ? ", config changed" : ""}`;
    }).catch(() => { status.textContent = ""; });
  }

  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) { hi = lo + 1; lo -= 1; }
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((x) => x >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  function metricsChart(holder, metrics, byId, pick) {
    const names = Object.keys(metrics);
    const select = h("select", {id: "metric"}, names.map((n) => h("option", {value: n, text: n})));
    if (names.includes("eval_loss")) select.value = "eval_loss";
    const canvas = h("div");
    fill(holder, h("div", {class: "toolbar"}, h("b", {text: "Metrics"}), select,
      h("span", {class: "muted", text: "click a point to open that version · shift-click to pick it for comparing"})),
      canvas);
    let marked = [];

    function draw() {
      const series = metrics[select.value];
      const pts = series.points;
      const W = Math.max(480, canvas.clientWidth || 900), H = 240;
      const m = {l: 62, r: 16, t: 10, b: 34};
      const xs = pts.map((p) => p.x), ys = pts.map((p) => p.y);
      let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
      if (x0 === x1) { x0 -= 1; x1 += 1; }
      if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
      const pad = (y1 - y0) * 0.08;
      y0 -= pad; y1 += pad;
      const X = (v) => m.l + (v - x0) / (x1 - x0) * (W - m.l - m.r);
      const Y = (v) => H - m.b - (v - y0) / (y1 - y0) * (H - m.t - m.b);
      const svg = s("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, id: "metric-chart",
        "data-metric": select.value});
      for (const t of niceTicks(y0, y1, 5)) {
        svg.append(s("line", {class: "gridline", x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t)}),
          s("text", {x: m.l - 6, y: Y(t) + 4, "text-anchor": "end", text: num(t)}));
      }
      for (const t of niceTicks(x0, x1, 8)) {
        if (series.x === "version" && !Number.isInteger(t)) continue;
        svg.append(s("line", {class: "axis", x1: X(t), x2: X(t), y1: H - m.b, y2: H - m.b + 4}),
          s("text", {x: X(t), y: H - m.b + 16, "text-anchor": "middle", text: num(t)}));
      }
      svg.append(s("line", {class: "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b}),
        s("line", {class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b}),
        s("text", {x: (m.l + W - m.r) / 2, y: H - 4, "text-anchor": "middle",
          text: series.x === "step" ? "step" : "version (oldest → newest)"}));
      const at = new Map(pts.map((p) => [p.id, p]));
      const lines = [];
      for (const p of pts) {  // each point joined to its parents' points: a branch is its own line
        for (const parent of p.parents) {
          const q = at.get(parent);
          if (q) lines.push(`M${X(q.x)},${Y(q.y)}L${X(p.x)},${Y(p.y)}`);
        }
      }
      svg.append(s("path", {class: "series", d: lines.join("")}));
      for (const p of pts) {
        const c = byId.get(p.id);
        const dot = s("circle", {class: "pt", cx: X(p.x), cy: Y(p.y), r: pts.length > 200 ? 3 : 4.5, "data-id": p.id,
          "data-x": p.x,
          "data-y": p.y});
        dot.addEventListener("mousemove", (ev) => showTip(ev,
          `${short(p.id)}  ${c ? firstLine(c.message) : ""}\n${select.value} = ${p.y}\n` +
          `${series.x === "step" ? "step" : "version"} ${p.x}`));
        dot.addEventListener("mouseleave", hideTip);
        dot.addEventListener("click", (ev) => {
          if (ev.shiftKey) { pick(p.id); return; }
          location.href = url("/version", {rev: p.id});
        });
        svg.append(dot);
      }
      canvas.replaceChildren(svg);
      mark(marked);
    }

    function mark(ids) {
      marked = ids.slice();
      for (const dot of canvas.querySelectorAll("circle.pt")) dot.classList.toggle("selected", marked.includes(dot.dataset.id));
    }

    select.addEventListener("change", draw);
    draw();
    return {mark: mark};
  }

  // -- one version --------------------------------------------------------------------------------------------
  function facts(pairs) {
    return h("dl", {class: "facts"}, pairs.filter((p) => p[1] !== null && p[1] !== undefined && p[1] !== "")
      .map(([k, v]) => [h("dt", {text: k}), h("dd", {}, v)]));
  }

  function copyButton(text) {
    return h("button", {text: "Copy", onclick: (ev) => {
      navigator.clipboard.writeText(text).then(() => { ev.target.textContent = "Copied"; },
        () => { ev.target.textContent = "Select and copy"; });
    }});
  }

  function scalarText(v) { return typeof v === "string" ? v : JSON.stringify(v); }

  async function versionPage() {
    const rev = query().get("rev");
    const {body: data} = await getJSON(url("/api/version", {rev}));
    const v = data.version;
    document.title = `adaptvc: ${short(v.id)} ${firstLine(v.message)}`;
    const parents = v.parents.length ? v.parents.map((p, i) => [i ? ", " : "",
      h("a", {class: "mono", href: url("/version", {rev: p}), text: short(p)})]) : "none (first version)";
    const meta = Object.assign({}, v.metadata || {});
    const metrics = meta.metrics && typeof meta.metrics === "object" ? meta.metrics : null;
    delete meta.metrics;
    const prov = v.provenance || {};
    const totalTensorBytes = v.tensors.reduce((a, t) => a + t.size, 0);

    const tensorTable = sortableTable([
      {key: "name", label: "tensor", cls: "mono"},
      {key: "dtype", label: "dtype"},
      {key: "shape", label: "shape", render: (t) => t.shape.length ? t.shape.join(" × ") : "scalar",
        sortValue: (t) => t.shape.reduce((a, b) => a * b, 1)},
      {key: "size", label: "size", num: true, render: (t) => bytes(t.size)},
      {key: "hash", label: "hash", cls: "mono", render: (t) => short(t.hash), title: (t) => t.hash},
    ], v.tensors, {id: "tensors"});

    const fileTable = sortableTable([
      {key: "path", label: "path", cls: "mono"},
      {key: "size", label: "size", num: true, render: (f) => bytes(f.size)},
      {key: "hash", label: "hash", cls: "mono", render: (f) => short(f.hash), title: (f) => f.hash},
    ], v.files, {id: "files"});

    const compareParent = v.parents.length ? h("a", {class: "button", href: url("/compare", {a: v.parents[0], b: v.id}),
      text: "Compare with its parent"}) : null;
    fill(main,
      h("h1", {}, h("span", {class: "mono", text: short(v.id)}), " ", (data.labels || []).map(refBadge),
        h("span", {text: firstLine(v.message)})),
      h("div", {class: "toolbar"}, compareParent,
        h("a", {class: "button", href: url("/compare", {a: v.id, b: "HEAD"}), text: "Compare with HEAD"}),
        h("a", {class: "button", href: url("/run", {to: v.id}), text: "The run up to here"})),
      h("div", {class: "cols"},
        h("div", {}, section("Commit", facts([
          ["id", h("span", {class: "mono", text: v.id})],
          ["parents", parents],
          ["author", v.author],
          ["time", `${when(v.timestamp)} (${v.timestamp})`],
          ["snapshot", h("span", {class: "mono", text: v.snapshot})],
        ]), h("div", {class: "message", text: v.message})),
        section("Base model", facts([
          ["name", v.base.name_or_path || "(unknown)"],
          ["revision", v.base.revision || "–"],
          ["fingerprint", v.base.fingerprint ? h("span", {class: "mono", text: v.base.fingerprint})
            : "none (the base was not at hand when committed)"],
          ["local path", data.local_path],
        ])),
        section("Code", Object.keys(prov).length ? facts(Object.entries(prov).map(([k, x]) => [k, scalarText(x)]))
          : h("p", {class: "muted", text: "No code provenance recorded."})),
        metrics ? section("Metrics", facts(Object.entries(metrics).map(([k, x]) => [k, scalarText(x)]))) : null,
        Object.keys(meta).length ? section("Metadata", facts(Object.entries(meta).map(([k, x]) => [k, scalarText(x)])))
          : null),
        h("div", {}, section("Load it",
          h("p", {class: "muted", text: "With adaptvc (straight from the store; checks the base pin):"}),
          h("pre", {class: "code", id: "snippet"}, data.snippets.adaptvc), copyButton(data.snippets.adaptvc),
          h("p", {class: "muted", text: "With plain PEFT, from a checked-out folder:"}),
          h("pre", {class: "code", id: "snippet-peft"}, data.snippets.peft), copyButton(data.snippets.peft)),
        section("Config", Object.keys(data.configs).length ? Object.entries(data.configs).map(([path, cfg]) => [
          h("div", {class: "mono muted", text: path}), h("pre", {class: "json", text: JSON.stringify(cfg, null, 2)})])
          : h("p", {class: "muted", text: "No adapter_config.json."})))),
      section(`Files (${v.files.length})`, fileTable),
      section(`Tensors (${v.tensors.length}, ${bytes(totalTensorBytes)})`, tensorTable));
    document.body.dataset.ready = "version";
  }

  // -- comparing ----------------------------------------------------------------------------------------------
  function pickForm(route, fields) {
    const form = h("form", {class: "pick", method: "get", action: route});
    for (const f of fields) {
      form.append(h("label", {class: "muted", text: f.label}),
        h("input", {name: f.name, class: f.cls || "rev", value: f.value || "", placeholder: f.placeholder || "",
          id: `pick-${f.name}`}));
    }
    return form;
  }

  async function poll(path, onProgress) {
    for (;;) {
      const {status, body} = await getJSON(path);
      if (status !== 202) return body;
      onProgress(body.progress);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  function progressView() {
    const bar = h("progress", {id: "progress-bar", max: 1, value: 0});
    const label = h("span", {class: "muted", text: " waiting…"});
    const box = h("div", {class: "progress", id: "progress"}, bar, label);
    return {
      box: box,
      update(p, prefix) {
        if (p.queued > 0) { bar.removeAttribute("value"); label.textContent = ` ${prefix || ""}queued (${p.queued})…`; return; }
        if (p.total > 0) { bar.max = p.total; bar.value = p.done; } else bar.removeAttribute("value");
        label.textContent = ` ${prefix || ""}comparing… ${bytes(p.done)} of ${bytes(p.total)} read`;
      },
    };
  }

  function heatMap(heat, diff, onPick) {
    const cw = Math.max(16, Math.min(44, Math.floor(900 / Math.max(1, heat.layers.length))));
    const ch = 24;
    const left = 12 + 7 * Math.max(4, ...heat.kinds.map((k) => k.length));
    const top = 26;
    const W = left + cw * heat.layers.length + 10, H = top + ch * heat.kinds.length + 30;
    const svg = s("svg", {width: W, height: H, class: "heat", id: "heatmap", "data-cells": heat.cells.length,
      "data-vmax": heat.vmax});
    heat.kinds.forEach((k, r) => svg.append(s("text", {x: left - 6, y: top + r * ch + ch / 2 + 4, "text-anchor": "end",
      text: k})));
    const step = Math.max(1, Math.ceil(heat.layers.length / 40));
    heat.layers.forEach((l, c) => {
      if (c % step === 0) svg.append(s("text", {x: left + c * cw + cw / 2, y: top - 8, "text-anchor": "middle",
        text: l === null ? "–" : String(l)}));
    });
    svg.append(s("text", {x: left + cw * heat.layers.length / 2, y: H - 8, "text-anchor": "middle", text: "layer"}));
    const modules = new Map(diff.modules.map((m) => [m.name, m]));
    const tensors = new Map(diff.tensors.map((t) => [t.name, t]));
    const showValues = heat.cells.length <= 160;
    for (const cell of heat.cells) {
      const x = left + cell.col * cw, y = top + cell.row * ch;
      const rect = s("rect", {class: "cell", x: x, y: y, width: cw, height: ch, fill: colour(cell.value, heat.vmax),
        "data-name": cell.name, "data-value": cell.value === null ? "" : String(cell.value), "data-kind": cell.kind,
        "data-layer": cell.layer === null ? "" : String(cell.layer)});
      const m = modules.get(cell.name), t = tensors.get(cell.name);
      let text = `${cell.name}\n${heat.label}: ${cell.value === null ? "not comparable" : cell.value}`;
      if (m) {
        text += `\n‖ΔW_a‖ ${num(m.delta_w_norm_a)} → ‖ΔW_b‖ ${num(m.delta_w_norm_b)}` +
          `\n‖ΔW_b − ΔW_a‖ ${num(m.delta_w_change)} · cos ${num(m.delta_w_cosine)} · rank ${m.rank_a}→${m.rank_b}`;
      } else if (t) {
        text += `\n‖a‖ ${num(t.norm_a)} · ‖b − a‖ ${num(t.delta_norm)} · cos ${num(t.cosine)}`;
      }
      text += "\nclick for the module's numbers and tensors";
      rect.addEventListener("mousemove", (ev) => showTip(ev, text));
      rect.addEventListener("mouseleave", hideTip);
      rect.addEventListener("click", () => onPick(cell));
      svg.append(rect);
      if (showValues && cell.value !== null) {
        svg.append(s("text", {class: `value ${cell.value < 0.6 * heat.vmax ? "light" : "dark"}`, x: x + cw / 2,
          y: y + ch / 2 + 3.5, "text-anchor": "middle", text: Number(cell.value.toPrecision(2)).toString()}));
      }
    }
    return svg;
  }

  function legend(vmax, label) {
    const id = `grad${Math.random().toString(36).slice(2)}`;
    const grad = s("linearGradient", {id: id});
    VIRIDIS.forEach((c, i) => grad.append(s("stop", {offset: `${(100 * i) / (VIRIDIS.length - 1)}%`, "stop-color": c})));
    const svg = s("svg", {width: 220, height: 14}, s("defs", {}, grad),
      s("rect", {x: 0, y: 0, width: 220, height: 14, fill: `url(#${id})`}));
    return h("div", {class: "legend"}, "0", svg, num(vmax), h("span", {text: ` ${label}`}),
      h("span", {class: "swatch", text: " · grey: not comparable"}));
  }

  const MODULE_COLUMNS = [
    {key: "name", label: "module", cls: "mono"},
    {key: "status", label: "status", render: (m) => h("span", {class: `status-${m.status}`, text: m.status})},
    {key: "rank_a", label: "rank", render: (m) => `${m.rank_a}→${m.rank_b}`},
    {key: "scale_a", label: "scale", render: (m) => `${num(m.scale_a)}→${num(m.scale_b)}`},
    {key: "delta_w_norm_a", label: "‖ΔW_a‖", num: true},
    {key: "delta_w_norm_b", label: "‖ΔW_b‖", num: true},
    {key: "delta_w_change", label: "‖ΔW_b − ΔW_a‖", num: true},
    {key: "delta_w_rel_change", label: "rel Δ", num: true},
    {key: "delta_w_cosine", label: "cos", num: true},
  ];

  const TENSOR_COLUMNS = [
    {key: "name", label: "tensor", cls: "mono"},
    {key: "status", label: "status", render: (t) => h("span", {class: `status-${t.status}`, text: t.status})},
    {key: "dtype_a", label: "dtype", render: (t) => t.dtype_a === t.dtype_b ? t.dtype_a : `${t.dtype_a || "–"}→${t.dtype_b || "–"}`},
    {key: "shape_a", label: "shape", render: (t) => {
      const f = (x) => x ? x.join("×") : "–";
      return f(t.shape_a) === f(t.shape_b) ? f(t.shape_a) : `${f(t.shape_a)}→${f(t.shape_b)}`;
    }, sortValue: (t) => (t.shape_b || t.shape_a || []).reduce((a, b) => a * b, 1)},
    {key: "norm_a", label: "‖a‖", num: true},
    {key: "norm_b", label: "‖b‖", num: true},
    {key: "delta_norm", label: "‖b − a‖", num: true},
    {key: "rel_delta", label: "rel Δ", num: true},
    {key: "cosine", label: "cos", num: true},
    {key: "max_abs_delta", label: "max |Δ|", num: true},
  ];

  async function comparePage() {
    const q = query();
    const a = q.get("a"), b = q.get("b");
    document.title = `adaptvc: ${a} → ${b}`;
    const form = pickForm("/compare", [{name: "a", label: "from", value: a}, {name: "b", label: "to", value: b}]);
    form.append(h("button", {type: "submit", class: "primary", text: "Compare"}),
      h("a", {class: "button", href: url("/compare", {a: b, b: a}), text: "Swap"}));
    const prog = progressView();
    fill(main, h("h1", {}, "Compare ", h("span", {class: "mono", text: a}), " → ",
      h("span", {class: "mono", text: b})), form, prog.box);
    document.body.dataset.state = "computing";
    const body = await poll(url("/api/diff", {a, b}), (p) => prog.update(p));
    const diff = body.diff, heat = body.heatmap, sum = diff.summary;
    document.body.dataset.state = "done";

    const drill = h("div", {id: "drill", class: "panel"});
    let active = null;
    function showCell(cell) {
      if (active) active.classList.remove("active");
      active = document.querySelector(`#heatmap rect.cell[data-name="${CSS.escape(cell.name)}"]`);
      if (active) active.classList.add("active");
      const m = diff.modules.find((x) => x.name === cell.name);
      const names = new Set(cell.tensors);
      const rows = diff.tensors.filter((t) => names.has(t.name));
      fill(drill, 
        h("h2", {}, h("span", {class: "mono", text: cell.name})),
        h("p", {class: "muted", text: `layer ${cell.layer === null ? "–" : cell.layer} · ${cell.kind} · ${heat.label}: ` +
          (cell.value === null ? "not comparable" : String(cell.value))}),
        m ? facts(MODULE_COLUMNS.filter((c) => c.key !== "name").map((c) =>
          [c.label, c.render ? c.render(m) : num(m[c.key], 6)])) : null,
        h("h2", {text: `Its tensors (${rows.length})`}),
        sortableTable(TENSOR_COLUMNS, rows, {id: "drill-tensors"}));
      drill.scrollIntoView({block: "nearest"});
    }

    const configRows = Object.entries(diff.config);
    fill(main,
      h("h1", {}, "Compare ", h("a", {class: "mono", href: url("/version", {rev: diff.a}), text: short(diff.a)}), " → ",
        h("a", {class: "mono", href: url("/version", {rev: diff.b}), text: short(diff.b)}),
        h("span", {class: "muted", text: ` (${a} → ${b})`})),
      form,
      h("div", {class: "summary panel", id: "summary"},
        [["modified", sum.tensors.modified], ["added", sum.tensors.added], ["removed", sum.tensors.removed],
          ["unchanged", sum.tensors.unchanged], ["modules changed", `${sum.modules.changed} of ${sum.modules.compared}`],
          ["‖Δ‖ total", num(sum.delta_norm_total)], ["‖ΔW_b − ΔW_a‖ total", num(sum.delta_w_change_total)],
          ["relative ΔW change", num(sum.delta_w_rel_change_total)], ["config keys changed", sum.config_keys_changed]]
          .map(([k, v]) => h("div", {}, h("b", {text: String(v)}), h("span", {text: k})))),
      section(`Where it changed: ${heat.label} (${heat.changed} of ${heat.compared} changed)`,
        heat.cells.length ? h("div", {class: "scroll"}, heatMap(heat, diff, showCell)) :
          h("p", {class: "muted", text: "Nothing to draw: the two versions share no tensors."}),
        heat.cells.length ? legend(heat.vmax, heat.label) : null),
      drill,
      section("Config changes", configRows.length ? h("table", {class: "grid", id: "config"},
        h("thead", {}, h("tr", {}, h("th", {text: "key"}), h("th", {text: "from"}), h("th", {text: "to"}))),
        h("tbody", {}, configRows.map(([k, [x, y]]) => h("tr", {}, h("td", {class: "mono", text: k}),
          h("td", {class: "mono", text: JSON.stringify(x)}), h("td", {class: "mono", text: JSON.stringify(y)})))))
        : h("p", {class: "muted", id: "config", text: "The configs are equal."})),
      diff.modules.length ? section(`Modules (${diff.modules.length})`,
        sortableTable(MODULE_COLUMNS, diff.modules, {id: "modules", sortKey: "delta_w_rel_change"})) : null,
      section(`Tensors (${diff.tensors.length})`,
        sortableTable(TENSOR_COLUMNS, diff.tensors, {id: "tensor-diff", sortKey: "rel_delta"})));
    const wanted = q.get("module");
    const cell = wanted && heat.cells.find((c) => c.name === wanted);
    if (cell) showCell(cell);
    document.body.dataset.ready = "compare";
  }

  // -- across a run -------------------------------------------------------------------------------------------
  function versionLabel(v) { return v.step !== null ? `step ${v.step}` : short(v.id); }

  // Labels for the run's versions, told apart by their id when two have the same step.
  function versionLabels(versions) {
    const seen = new Set();
    return versions.map((v) => {
      let label = versionLabel(v);
      if (seen.has(label)) label += ` · ${v.id.slice(0, 7)}`;
      seen.add(versionLabel(v));
      return label;
    });
  }

  async function runPage() {
    const q = query();
    const to = q.get("to") || "HEAD", from = q.get("from") || "", n = q.get("n") || "";
    const form = pickForm("/run", [{name: "to", label: "up to", value: to},
      {name: "from", label: "from", value: from, placeholder: "(n versions back)"},
      {name: "n", label: "versions", value: n, cls: "num", placeholder: "20"}]);
    form.append(h("button", {type: "submit", class: "primary", text: "Show"}));
    const prog = progressView();
    fill(main, h("h1", {text: "Across a run"}), form, prog.box);
    document.body.dataset.state = "computing";
    const data = await poll(url("/api/run", {to, from, n}), (p) =>
      prog.update(p, `step ${p.pairs_done + 1} of ${p.pairs_total}: `));
    document.body.dataset.state = "done";

    const scale = h("select", {id: "scale"}, h("option", {value: "run", text: "one colour scale for the whole run"}),
      h("option", {value: "step", text: "each step its own colour scale"}));
    const holder = h("div", {class: "scroll panel"});
    const legendHolder = h("div");
    function draw() {
      const own = scale.value === "step";
      holder.replaceChildren(runMap(data, own));
      fill(legendHolder, own ? h("p", {class: "muted", text: "Each step is coloured from 0 to its own largest " +
        "value (shown under it)."}) : legend(data.vmax, data.label));
    }
    scale.addEventListener("change", draw);
    fill(main, h("h1", {}, "Across a run ",
      h("span", {class: "muted", text: `· ${data.versions.length} versions, ${short(data.versions[0].id)} → ` +
        `${short(data.versions[data.versions.length - 1].id)}`})), form,
      h("p", {class: "muted", text: `Each block compares a version with the one before it (first parents): ` +
        `layers down, module kinds across; colour = ${data.label}. Click a cell to open that comparison.`}),
      h("div", {class: "toolbar"}, scale), holder, legendHolder);
    draw();
    document.body.dataset.ready = "run";
  }

  // Small multiples: one block per step (layers down, module kinds across), blocks left to right in time.
  function runMap(data, ownScale) {
    const steps = data.steps, K = data.kinds.length, L = data.layers.length;
    const labels = versionLabels(data.versions);
    const cw = Math.max(6, Math.min(16, Math.floor(110 / Math.max(1, K))));
    const ch = L > 40 ? 10 : 16;
    const gap = 12, left = 70;
    const top = 24 + 4.2 * Math.max(...labels.map((l) => l.length));  // room for the slanted labels
    const block = K * cw;
    const kindLabels = 8 + 5.6 * Math.max(...data.kinds.map((k) => k.length));
    const W = left + steps.length * (block + gap) + 40, H = top + L * ch + kindLabels + 8;
    const svg = s("svg", {width: W, height: H, class: "heat", id: "runmap", "data-rows": data.rows.length,
      "data-steps": steps.length});
    data.layers.forEach((layer, r) => {
      if (L <= 40 || r % 5 === 0) {
        svg.append(s("text", {x: left - 6, y: top + r * ch + ch / 2 + 4, "text-anchor": "end",
          text: layer === null ? "–" : `layer ${layer}`}));
      }
    });
    steps.forEach((st, c) => {
      const x0 = left + c * (block + gap);
      const v = data.versions[c + 1];
      const label = s("text", {class: "colhead", x: 0, y: 0, "text-anchor": "start",
        transform: `translate(${x0 + block / 2 - 4},${top - 6}) rotate(-40)`, text: labels[c + 1]});
      label.addEventListener("click", () => { location.href = url("/compare", {a: st.a, b: st.b}); });
      label.addEventListener("mousemove", (ev) => showTip(ev,
        `${short(st.a)} → ${short(st.b)}\n${v.message}\nclick to compare`));
      label.addEventListener("mouseleave", hideTip);
      svg.append(label);
      if (ownScale) {
        svg.append(s("text", {x: x0 + block / 2, y: top + L * ch + 12, "text-anchor": "middle",
          text: `≤ ${num(data.step_vmax[c], 2)}`}));
      }
    });
    data.kinds.forEach((kind, k) => svg.append(s("text", {x: 0, y: 0, "text-anchor": "end",  // under the first block
      transform: `translate(${left + k * cw + cw / 2 + 3},${top + L * ch + (ownScale ? 18 : 6)}) rotate(-90)`,
      text: kind})));
    data.rows.forEach((r, i) => {
      data.values[i].forEach((value, c) => {
        const st = steps[c];
        const vmax = ownScale ? data.step_vmax[c] : data.vmax;
        const rect = s("rect", {class: "cell", x: left + c * (block + gap) + r.kind_index * cw, y: top + r.layer_index * ch,
          width: cw, height: ch, fill: colour(value, vmax), "data-name": r.name, "data-step": c,
          "data-value": value === null ? "" : String(value)});
        rect.addEventListener("mousemove", (ev) => showTip(ev, `${r.name}\n${short(st.a)} → ${short(st.b)} ` +
          `(${labels[c]} → ${labels[c + 1]})\n` +
          `${data.label}: ${value === null ? "not comparable" : value}`));
        rect.addEventListener("mouseleave", hideTip);
        rect.addEventListener("click", () => { location.href = url("/compare", {a: st.a, b: st.b, module: r.name}); });
        svg.append(rect);
      });
    });
    return svg;
  }

  const PAGES = {history: historyPage, version: versionPage, compare: comparePage, run: runPage};
  const page = PAGES[document.body.dataset.page];
  if (page) page().catch((e) => showError(e.message || String(e)));
})();
