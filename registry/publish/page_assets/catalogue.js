// The catalogue page's behaviour: filters, sorting, paging, the layer × width grid, copy
// buttons and the filter state in the URL. Plain JavaScript, no dependencies; every filter
// change is one pass over the rows in the current sort order, and only one page of rows is
// put in the DOM, so a change costs a few milliseconds on 14,000 rows.
(function () {
  "use strict";
  performance.mark("saereg:start");

  var D = JSON.parse(document.getElementById("catalogue-data").textContent);
  var PAGE_SIZE = 100;
  var MD_EXT = location.protocol === "file:" ? ".md" : ".html";
  var FIELDS = ["q", "model", "site", "layer_min", "layer_max", "width", "l0_min", "l0_max",
    "arch", "publisher", "format"];
  var SORTS = ["ref", "model", "hook", "layer", "width", "l0", "arch"];

  // ------------------------------------------------------------------ columns
  var rows = D.rows, N = rows.length, rels = D.releases;
  var cModel = new Int32Array(N), cPub = new Int32Array(N),
    cFmt = new Int32Array(N), cSite = new Int32Array(N), cArch = new Int32Array(N),
    cLayer = new Float64Array(N), cWidth = new Float64Array(N), cL0 = new Float64Array(N),
    hay = null;
  for (var i = 0; i < N; i++) {
    var r = rows[i], rel = rels[r[0]];
    cModel[i] = rel[1]; cPub[i] = rel[2]; cFmt[i] = rel[3];
    cLayer[i] = r[3] === null ? NaN : r[3];
    cWidth[i] = r[4] === null ? NaN : r[4];
    cL0[i] = r[5] === null ? NaN : r[5];
    cArch[i] = r[6]; cSite[i] = r[7];
  }
  function ref(i) { return rels[rows[i][0]][0] + "/" + rows[i][1]; }
  // "release/id" in lower case, for text search and sorting; built on first use.
  function haystack() {
    if (!hay) {
      hay = new Array(N);
      for (var k = 0; k < N; k++) hay[k] = ref(k).toLowerCase();
    }
    return hay;
  }

  // ------------------------------------------------------------------ helpers
  function $(id) { return document.getElementById(id); }
  var ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(s) { return String(s).replace(/[&<>"']/g, function (c) { return ESC[c]; }); }
  // Not toLocaleString: its first call loads locale data, ~30 ms of the first render.
  function fmtInt(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
  // As publishers name widths: 16384 is "16k", but 65536 is "65k" and 262144 "262k".
  function widthLabel(w) {
    if (w >= 1048576 && w % 1048576 === 0) return w / 1048576 + "M";
    if (w >= 65536 && (w & (w - 1)) === 0) return Math.floor(w / 1000) + "k";
    if (w >= 1024 && w % 1024 === 0) return w / 1024 + "k";
    return String(w);
  }
  function num(s) {
    if (s === "" || s === null || s === undefined) return NaN;
    var v = Number(s);
    return isFinite(v) ? v : NaN;
  }
  function loadLine(ref) { return "saereg.load_sae(" + JSON.stringify(ref) + ")"; }
  function mdHref(path) {
    var at = path.indexOf("#");
    return at < 0 ? path + MD_EXT : path.slice(0, at) + MD_EXT + path.slice(at);
  }

  // ------------------------------------------------------------------ sort orders
  function cmpStr(a, b) { return a < b ? -1 : a > b ? 1 : 0; }
  function keyOf(name) {
    switch (name) {
      case "ref": return { s: haystack() };
      case "model": return { s: null, idx: cModel, names: D.models };
      case "arch": return { s: null, idx: cArch, names: D.archs };
      case "hook": return { s: null, idx: rows.map(function (r) { return r[2]; }), names: D.hooks };
      case "layer": return { n: cLayer };
      case "width": return { n: cWidth };
      case "l0": return { n: cL0 };
    }
    return null;
  }
  // Row numbers in the order of a column (ties keep catalogue order; unknown values last,
  // in both directions); computed once per column and direction.
  var orders = {};
  function order(name, dir) {
    var id = name + ":" + dir;
    if (orders[id]) return orders[id];
    var out = new Int32Array(N), k;
    if (!name) {
      for (k = 0; k < N; k++) out[k] = k;
    } else {
      var key = keyOf(name), sign = dir === "desc" ? -1 : 1, idx = [];
      for (k = 0; k < N; k++) idx.push(k);
      if (key.n) {
        var v = key.n;
        idx.sort(function (a, b) {
          var x = v[a], y = v[b], xn = x !== x, yn = y !== y;
          if (xn || yn) return xn === yn ? a - b : xn ? 1 : -1;
          return x === y ? a - b : (x - y) * sign;
        });
      } else {
        var names = key.names, strs = key.s;
        var text = strs || Array.prototype.map.call(key.idx, function (j) {
          return String(names[j]).toLowerCase();
        });
        idx.sort(function (a, b) {
          var x = text[a], y = text[b];
          if (!x || !y) return !x === !y ? a - b : !x ? 1 : -1;
          return x === y ? a - b : cmpStr(x, y) * sign;
        });
      }
      out.set(idx);
    }
    orders[id] = out;
    return out;
  }

  // ------------------------------------------------------------------ state <-> URL
  var state = {};
  function blankState() {
    var s = { sort: "", dir: "asc", page: 1 };
    FIELDS.forEach(function (f) { s[f] = ""; });
    return s;
  }
  function readHash() {
    var s = blankState();
    var p = new URLSearchParams(location.hash.replace(/^#/, ""));
    FIELDS.forEach(function (f) { if (p.has(f)) s[f] = p.get(f); });
    if (SORTS.indexOf(p.get("sort")) >= 0) s.sort = p.get("sort");
    if (p.get("dir") === "desc") s.dir = "desc";
    var page = parseInt(p.get("page") || "1", 10);
    s.page = page > 0 ? page : 1;
    return s;
  }
  function hashOf(s) {
    var p = new URLSearchParams();
    FIELDS.forEach(function (f) { if (s[f] !== "") p.set(f, s[f]); });
    if (s.sort) { p.set("sort", s.sort); if (s.dir === "desc") p.set("dir", "desc"); }
    if (s.page > 1) p.set("page", String(s.page));
    var text = p.toString();
    return text ? "#" + text : "";
  }
  // Writing the URL costs several milliseconds (the browser updates its session history),
  // so it waits until changes pause, and is flushed before the page is left.
  var hashTimer = 0;
  function scheduleHash() {
    clearTimeout(hashTimer);
    hashTimer = setTimeout(writeHash, 200);
  }
  function writeHash() {
    clearTimeout(hashTimer);
    var h = hashOf(state);
    if (h === location.hash || (h === "" && location.hash === "")) return;
    var url = location.href.replace(/#.*$/, "") + h;
    try {
      history.replaceState(null, "", url);
    } catch (e) {
      location.replace(h || "#");
    }
  }

  // ------------------------------------------------------------------ the form
  var form = $("filters");
  function fillSelect(el, anyLabel, options) {
    var html = '<option value="">' + esc(anyLabel) + "</option>";
    options.forEach(function (o) {
      html += '<option value="' + esc(o[0]) + '"' + (o[2] ? ' title="' + esc(o[2]) + '"' : "") +
        ">" + esc(o[1]) + "</option>";
    });
    el.innerHTML = html;
  }
  function tally(col, size) {
    var counts = new Int32Array(size);
    for (var k = 0; k < N; k++) counts[col[k]]++;
    return counts;
  }
  function byName(names, col) {
    var counts = tally(col, names.length);
    return names.map(function (name, j) { return [name, j]; })
      .filter(function (p) { return p[0] !== ""; })
      .sort(function (a, b) { return cmpStr(a[0].toLowerCase(), b[0].toLowerCase()); })
      .map(function (p) { return [p[0], p[0] + " (" + fmtInt(counts[p[1]]) + ")"]; });
  }
  var modelCounts = tally(cModel, D.models.length);
  fillSelect($("f-model"), "any model", D.models.map(function (m, j) {
    return [m, m + " (" + fmtInt(modelCounts[j]) + ")"];
  }));
  fillSelect($("f-publisher"), "any publisher", byName(D.publishers, cPub));
  fillSelect($("f-format"), "any format", byName(D.formats, cFmt));
  fillSelect($("f-arch"), "any architecture", byName(D.archs, cArch));
  (function () {
    var counts = tally(cSite, D.sites.length), opts = [], groups = {};
    D.sites.forEach(function (site, j) {
      var n = counts[j], group = site.split("_")[0];
      if (!n) return;
      if (site.indexOf("_") > 0) {
        if (!groups[group]) {
          groups[group] = [group, group + " (any)"];
          opts.push(groups[group]);
        }
        opts.push([site, "\u00a0\u00a0" + site + " (" + fmtInt(n) + ")"]);
      } else {
        opts.push([site, site + " (" + fmtInt(n) + ")"]);
      }
    });
    fillSelect($("f-site"), "any hook site", opts);
    var widths = new Map();
    for (var k = 0; k < N; k++) {
      var w = cWidth[k];
      if (w === w) widths.set(w, (widths.get(w) || 0) + 1);
    }
    var ws = Array.from(widths.keys()).sort(function (a, b) { return a - b; });
    fillSelect($("f-width"), "any width", ws.map(function (w) {
      return [String(w), widthLabel(w) + " (" + fmtInt(widths.get(w)) + ")", fmtInt(w) + " latents"];
    }));
  })();

  function indexOf(names, value) { return value === "" ? -1 : names.indexOf(value); }
  function siteSet(value) {
    var set = new Uint8Array(D.sites.length);
    D.sites.forEach(function (site, j) {
      set[j] = value === "" || site === value || site.indexOf(value + "_") === 0 ? 1 : 0;
    });
    return set;
  }

  // ------------------------------------------------------------------ filtering
  var matched = new Int32Array(N), nMatched = 0;
  var gridCounts = null, gridModel = -1, unknownFields = [];

  function compute() {
    var s = state;
    var terms = s.q.toLowerCase().split(/\s+/).filter(Boolean);
    var model = indexOf(D.models, s.model), pub = indexOf(D.publishers, s.publisher),
      fmt = indexOf(D.formats, s.format), arch = indexOf(D.archs, s.arch),
      sites = siteSet(s.site), anySite = s.site === "";
    var lmin = num(s.layer_min), lmax = num(s.layer_max), w = num(s.width),
      l0min = num(s.l0_min), l0max = num(s.l0_max);
    // An empty bound is NaN, and every comparison with NaN is false: an open end.
    var hasL = lmin === lmin || lmax === lmax, hasW = w === w,
      hasL0 = l0min === l0min || l0max === l0max;
    unknownFields = [["model", model], ["publisher", pub], ["format", fmt], ["arch", arch],
      ["site", D.sites.some(function (x, j) { return sites[j]; }) ? 0 : -1],
      ["width", s.width === "" || w === w ? 0 : -1]].filter(function (p) {
      return s[p[0]] !== "" && p[1] < 0;
    }).map(function (p) { return p[0]; });
    if (unknownFields.length) {  // a value that names nothing matches nothing
      nMatched = 0;
      gridModel = -1;
      gridCounts = {};
      return;
    }
    var ord = order(s.sort, s.dir), nt = terms.length, texts = nt ? haystack() : null;
    // With a model chosen, the grid counts its SAEs per (layer, width) under every filter
    // but layer and width; without one, it counts the matching SAEs per model.
    gridModel = model;
    var gc = {};
    nMatched = 0;
    for (var k = 0; k < N; k++) {
      var i = ord[k];
      if (model >= 0 && cModel[i] !== model) continue;
      if (pub >= 0 && cPub[i] !== pub) continue;
      if (fmt >= 0 && cFmt[i] !== fmt) continue;
      if (arch >= 0 && cArch[i] !== arch) continue;
      if (!anySite && !sites[cSite[i]]) continue;
      if (hasL0) {
        var z = cL0[i];
        if (z !== z || z < l0min || z > l0max) continue;
      }
      if (nt) {
        var h = texts[i], ok = true;
        for (var t = 0; t < nt; t++) if (h.indexOf(terms[t]) < 0) { ok = false; break; }
        if (!ok) continue;
      }
      var L = cLayer[i], W = cWidth[i];
      if (model >= 0 && L === L && W === W) gc[L + ":" + W] = (gc[L + ":" + W] || 0) + 1;
      if (hasL && (L !== L || L < lmin || L > lmax)) continue;
      if (hasW && W !== w) continue;
      if (model < 0) gc[cModel[i]] = (gc[cModel[i]] || 0) + 1;
      matched[nMatched++] = i;
    }
    gridCounts = gc;
  }
  // ------------------------------------------------------------------ rendering
  var tbody = $("rows");
  var UNKNOWN = '<span class="unk">unknown</span>';
  function rowHtml(i) {
    var r = rows[i], rel = rels[r[0]], name = ref(i);
    var links = '<a href="' + esc(rel[4]) + '" title="Repository: ' + esc(rel[4]) + '">repo</a>';
    if (r[8]) {
      links += ' <a href="' + esc(D.neuronpedia + r[8]) + '" title="Neuronpedia: ' + esc(r[8]) +
        '">Neuronpedia</a>';
    }
    links += ' <a href="' + esc(mdHref(rel[5])) + '" title="The release in the markdown catalogue">docs</a>';
    var W = r[4];
    return "<tr>" +
      '<td class="ref"><span class="rel">' + esc(rel[0]) + '</span><span class="id">' + esc(r[1]) +
      "</span></td>" +
      '<td class="model">' + esc(D.models[rel[1]]) + "</td>" +
      '<td class="hook"><code>' + (r[2] >= 0 && D.hooks[r[2]] ? esc(D.hooks[r[2]]) : "") +
      '</code><span class="site">' + esc(D.sites[r[7]]) + "</span></td>" +
      '<td class="num">' + (r[3] === null ? UNKNOWN : r[3]) + "</td>" +
      '<td class="num">' + (W === null ? UNKNOWN : '<span title="' + W + ' latents">' +
        widthLabel(W) + "</span>") + "</td>" +
      '<td class="num">' + (r[5] === null ? UNKNOWN : esc(+r[5].toFixed(2))) + "</td>" +
      "<td>" + (D.archs[r[6]] ? esc(D.archs[r[6]]) : UNKNOWN) + "</td>" +
      '<td class="links">' + links + "</td>" +
      '<td><button type="button" class="copy" data-ref="' + esc(name) + '" title="' +
      esc(loadLine(name)) + '" aria-label="Copy ' + esc(loadLine(name)) + '">Copy</button></td>' +
      "</tr>";
  }

  function pages() { return Math.max(1, Math.ceil(nMatched / PAGE_SIZE)); }

  function renderTable() {
    var page = Math.min(state.page, pages());
    state.page = page;
    var start = (page - 1) * PAGE_SIZE, end = Math.min(nMatched, start + PAGE_SIZE);
    var out = [];
    for (var k = start; k < end; k++) out.push(rowHtml(matched[k]));
    var none = unknownFields.length
      ? "No SAE matches: " + unknownFields.map(function (f) {
        return "unknown " + f + " \u201c" + state[f] + "\u201d";
      }).join(", ") + "."
      : "No SAE matches these filters.";
    tbody.innerHTML = out.length ? out.join("") :
      '<tr class="empty"><td colspan="9">' + esc(none) + "</td></tr>";
    $("count").textContent = nMatched === N
      ? "All " + fmtInt(N) + " SAEs"
      : fmtInt(nMatched) + " of " + fmtInt(N) + " SAEs match";
    $("count").setAttribute("data-count", String(nMatched));
    $("page-label").textContent = nMatched
      ? "Rows " + fmtInt(start + 1) + "–" + fmtInt(end) + " · page " + page + " of " + pages()
      : "";
    $("first").disabled = $("prev").disabled = page <= 1;
    $("next").disabled = $("last").disabled = page >= pages();
    var ths = document.querySelectorAll("#results th[data-sort]");
    for (var t = 0; t < ths.length; t++) {
      var th = ths[t], key = th.getAttribute("data-sort");
      if (key === state.sort) th.setAttribute("aria-sort", state.dir === "desc" ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    }
  }

  function heat(n, max) {
    return max <= 1 ? 1 : 0.25 + 0.75 * Math.log(n) / Math.log(max);
  }

  function renderGrid() {
    var grid = $("grid"), hint = $("grid-hint"), gc = gridCounts, keys = Object.keys(gc), k;
    if (gridModel < 0) {
      hint.textContent = "SAEs per model under the other filters; choose one to see its layer × width grid.";
      var max = 0;
      keys.forEach(function (m) { max = Math.max(max, gc[m]); });
      var html = '<ul class="models">';
      D.models.forEach(function (m, j) {
        var n = gc[j] || 0;
        html += '<li><button type="button" class="chip" data-model="' + esc(m) + '"' +
          (n ? ' style="--heat:' + heat(n, max).toFixed(3) + '"' : " disabled") + ">" +
          esc(m) + ' <span class="n">' + fmtInt(n) + "</span></button></li>";
      });
      grid.innerHTML = html + "</ul>";
      return;
    }
    var widths = {}, maxN = 0, lo = Infinity, hi = -Infinity;
    keys.forEach(function (key) {
      var p = key.split(":"), L = +p[0], W = +p[1];
      lo = Math.min(lo, L); hi = Math.max(hi, L);
      widths[W] = true;
      maxN = Math.max(maxN, gc[key]);
    });
    var model = D.models[gridModel];
    if (!keys.length) {
      hint.textContent = "No SAE of " + model + " matches the other filters.";
      grid.innerHTML = "";
      return;
    }
    hint.textContent = "SAEs of " + model + " per layer and width under the other filters; " +
      "choose a cell to filter by it, again to clear.";
    var ws = Object.keys(widths).map(Number).sort(function (a, b) { return a - b; });
    var selL = num(state.layer_min), selLmax = num(state.layer_max), selW = num(state.width);
    var html = '<table class="grid"><caption>' + esc(model) +
      ": SAEs per layer (columns) and width (rows)</caption><thead><tr>" +
      '<th scope="col">width \\ layer</th>';
    for (k = lo; k <= hi; k++) html += '<th scope="col">' + k + "</th>";
    html += "</tr></thead><tbody>";
    ws.forEach(function (W) {
      html += '<tr><th scope="row">' + widthLabel(W) + "</th>";
      for (k = lo; k <= hi; k++) {
        var n = gc[k + ":" + W] || 0;
        if (!n) { html += '<td class="none"></td>'; continue; }
        var on = selL === k && selLmax === k && selW === W;
        html += '<td><button type="button" class="cell' + (on ? " on" : "") + '" data-layer="' + k +
          '" data-width="' + W + '" aria-pressed="' + on + '" aria-label="layer ' + k + ", width " +
          widthLabel(W) + ": " + n + " SAE" + (n === 1 ? "" : "s") + '" style="--heat:' +
          heat(n, maxN).toFixed(3) + '">' + n + "</button></td>";
      }
      html += "</tr>";
    });
    grid.innerHTML = html + "</tbody></table>";
  }

  // The form shows the state. Any name of a model (gpt2, openai-community/gpt2) selects
  // the model, as `saereg list --model` does; a value no list offers (an old or mistyped
  // link) stays, shown as unknown in its list, and matches nothing (see compute), rather
  // than silently showing every row.
  function syncForm() {
    if (state.model !== "" && D.models.indexOf(state.model) < 0) {
      var j = (D.aliases || {})[state.model.toLowerCase()];
      if (j !== undefined) state.model = D.models[j];
    }
    FIELDS.forEach(function (f) {
      var el = form.elements[f];
      if (el.tagName === "SELECT") {
        var stale = el.querySelector("option[data-unknown]");
        if (stale && stale.value !== state[f]) stale.remove();
        if (!Array.prototype.some.call(el.options, function (o) { return o.value === state[f]; })) {
          var opt = document.createElement("option");
          opt.value = state[f];
          opt.textContent = state[f] + " (unknown)";
          opt.setAttribute("data-unknown", "");
          el.appendChild(opt);
        }
      }
      if (el.value !== state[f]) el.value = state[f];
    });
  }

  function update(opts) {
    var t = performance.now();
    compute();
    renderTable();
    renderGrid();
    if (!opts || !opts.fromHash) scheduleHash();
    performance.measure("saereg:update", { start: t, end: performance.now() });
  }

  // ------------------------------------------------------------------ events
  function setFromForm(el) {
    var value = el.value.trim();
    if (FIELDS.indexOf(el.name) < 0 || state[el.name] === value) return;  // input, then change
    state[el.name] = value;
    state.page = 1;
    update();
  }
  form.addEventListener("input", function (e) { setFromForm(e.target); });
  form.addEventListener("change", function (e) { setFromForm(e.target); });
  form.addEventListener("submit", function (e) { e.preventDefault(); });
  $("clear").addEventListener("click", function () {
    var sort = state.sort, dir = state.dir;
    state = blankState();
    state.sort = sort; state.dir = dir;
    syncForm();
    update();
    $("f-q").focus();
  });
  $("results").querySelector("thead").addEventListener("click", function (e) {
    var th = e.target.closest("th[data-sort]");
    if (!th) return;
    var key = th.getAttribute("data-sort");
    if (state.sort === key) state.dir = state.dir === "asc" ? "desc" : "asc";
    else { state.sort = key; state.dir = "asc"; }
    state.page = 1;
    update();
  });
  function goPage(p) {
    state.page = Math.max(1, Math.min(p, pages()));
    update();
  }
  $("first").addEventListener("click", function () { goPage(1); });
  $("prev").addEventListener("click", function () { goPage(state.page - 1); });
  $("next").addEventListener("click", function () { goPage(state.page + 1); });
  $("last").addEventListener("click", function () { goPage(pages()); });

  $("grid").addEventListener("click", function (e) {
    var b = e.target.closest("button");
    if (!b) return;
    if (b.hasAttribute("data-model")) {
      state.model = b.getAttribute("data-model");
    } else {
      var L = b.getAttribute("data-layer"), W = b.getAttribute("data-width");
      var on = b.getAttribute("aria-pressed") === "true";
      state.layer_min = state.layer_max = on ? "" : L;
      state.width = on ? "" : W;
    }
    state.page = 1;
    syncForm();
    update();
    var again = b.hasAttribute("data-model") ? null
      : $("grid").querySelector('button[data-layer="' + b.getAttribute("data-layer") +
        '"][data-width="' + b.getAttribute("data-width") + '"]');
    (again || $("grid").querySelector("button") || $("f-model")).focus();
  });

  var announce = $("announce");
  function copied(text, ok, button) {
    announce.textContent = ok ? "Copied " + text : "Copy failed; select the text: " + text;
    button.textContent = ok ? "Copied" : "Failed";
    button.setAttribute("data-copied", ok ? "yes" : "no");
    setTimeout(function () { button.textContent = "Copy"; }, 1500);
  }
  function copyFallback(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }
  tbody.addEventListener("click", function (e) {
    var b = e.target.closest("button.copy");
    if (!b) return;
    var text = loadLine(b.getAttribute("data-ref"));
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(
        function () { copied(text, true, b); },
        function () { copied(text, copyFallback(text), b); }
      );
    } else {
      copied(text, copyFallback(text), b);
    }
  });

  // The skip link moves the focus without touching the URL, which holds the filters.
  document.querySelector("a.skip").addEventListener("click", function (e) {
    e.preventDefault();
    $("results-title").focus();
  });
  window.addEventListener("pagehide", writeHash);
  window.addEventListener("hashchange", function () {
    if (location.hash === hashOf(state)) return;
    if (location.hash && location.hash.indexOf("=") < 0) return;  // an anchor, not filters
    clearTimeout(hashTimer);
    state = readHash();
    syncForm();
    update({ fromHash: true });
  });

  // ------------------------------------------------------------------ start
  var mdLinks = document.querySelectorAll("a.md");
  for (var m = 0; m < mdLinks.length; m++) {
    mdLinks[m].setAttribute("href", mdHref(mdLinks[m].getAttribute("href").replace(/\.md$/, "")));
  }
  state = readHash();
  syncForm();
  $("app").hidden = false;
  update({ fromHash: true });
  performance.measure("saereg:first-render", "saereg:start");
  document.documentElement.setAttribute("data-ready", "");
  // The text search's lower-case names (one string per SAE: ~50 ms at 140,000 SAEs) are
  // built while the page is idle after the first render, not on the first key press.
  (window.requestIdleCallback || function (fn) { return setTimeout(fn, 50); })(haystack);
})();
