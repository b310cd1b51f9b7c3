// Draws the I/O timeline of a powercut report as SVG (no library, no network).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("data").textContent);
  var K = { WRITE: 1, WRITE_ZEROES: 2, DISCARD: 3, FLUSH: 4, MARK: 5 };
  var F = { FUA: 1, PREFLUSH: 2 };
  var NS = "http://www.w3.org/2000/svg";
  var svg = document.getElementById("timeline");
  var ops = data.ops;
  var maxSeq = 1;
  ops.forEach(function (o) { if (o[6] + 1 > maxSeq) maxSeq = o[6] + 1; });
  var devs = data.devices || [];
  var laneH = 120, gap = 28, left = 90, top = 18;
  var width = Math.min(Math.max(1300, ops.length * 4), 24000);
  var scale = (width - left - 10) / maxSeq;
  var height = top + devs.length * (laneH + gap) + 10;
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    (parent || svg).appendChild(e);
    return e;
  }
  function x(seq) { return left + seq * scale; }
  function laneTop(dev) {
    for (var i = 0; i < devs.length; i++) if (devs[i].id === dev) return top + i * (laneH + gap);
    return top;
  }
  function devSize(dev) {
    for (var i = 0; i < devs.length; i++) if (devs[i].id === dev) return devs[i].size || 1;
    return 1;
  }
  function kindName(o) {
    var n = ["", "WRITE", "WRITE_ZEROES", "DISCARD", "FLUSH", "MARK"][o[0]] || "?";
    if (o[1] & F.FUA) n = "FUA " + n;
    if (o[1] & F.PREFLUSH && o[0] !== K.FLUSH) n = "PREFLUSH " + n;
    return n;
  }

  // Flush epochs: alternate shading between completed flushes of each device.
  devs.forEach(function (d) {
    var y0 = laneTop(d.id), last = 0, shade = false;
    var flushes = [];
    ops.forEach(function (o) {
      if (o[2] === d.id && (o[0] === K.FLUSH || (o[1] & F.PREFLUSH))) flushes.push(o[6]);
    });
    flushes.push(maxSeq);
    flushes.forEach(function (c) {
      if (shade) el("rect", { x: x(last), y: y0, width: Math.max(0, x(c) - x(last)), height: laneH, fill: "#f2f5fa", class: "epoch" });
      shade = !shade;
      last = c;
    });
    el("rect", { x: left, y: y0, width: width - left - 10, height: laneH, fill: "none", stroke: "#bbb" });
    var label = el("text", { x: 4, y: y0 + 14, "font-size": 12 });
    label.textContent = "device " + d.id + (d.name ? " (" + d.name + ")" : "");
  });

  var opEls = [];
  ops.forEach(function (o, i) {
    var y0 = laneTop(o[2]);
    var title;
    if (o[0] === K.MARK) {
      var m = el("line", { x1: x(o[5]), x2: x(o[5]), y1: top - 6, y2: height - 10, stroke: "#1b7d2e", "stroke-dasharray": "3,3", class: "mark" });
      title = el("title", {}, m);
      title.textContent = "op " + i + ": MARK " + JSON.stringify(data.marks[i] || "");
      opEls.push(m);
      return;
    }
    if (o[0] === K.FLUSH) {
      var f = el("line", { x1: x(o[6]), x2: x(o[6]), y1: y0, y2: y0 + laneH, stroke: "#e68a00", "stroke-width": 1.5, class: "op flush" });
      title = el("title", {}, f);
      title.textContent = "op " + i + ": FLUSH, submitted at " + o[5] + ", completed at " + o[6];
      opEls.push(f);
      return;
    }
    var size = devSize(o[2]);
    var fill = o[0] === K.DISCARD ? "#9aa0a6" : o[0] === K.WRITE_ZEROES ? "#7fb3e6" : (o[1] & F.FUA) ? "#0b2d5b" : "#2f6db5";
    var r = el("rect", {
      x: x(o[5]), width: Math.max(1.5, x(o[6]) - x(o[5])),
      y: y0 + (o[3] / size) * laneH, height: Math.max(2, (o[4] / size) * laneH),
      fill: fill, class: "op " + kindName(o).toLowerCase().replace(/ /g, "-"), "data-op": i
    });
    title = el("title", {}, r);
    title.textContent = "op " + i + ": " + kindName(o) + " " + o[4] + " bytes at offset " + o[3] + " (device " + o[2] + "), submitted at " + o[5] + ", completed at " + o[6];
    opEls.push(r);
  });

  var overlay = el("g", { id: "selection" });
  function select(gi) {
    while (overlay.firstChild) overlay.removeChild(overlay.firstChild);
    document.querySelectorAll(".group").forEach(function (g) { g.classList.toggle("selected", +g.dataset.group === gi); });
    var g = data.groups[gi];
    if (!g) return;
    g.deviating.forEach(function (i, k) {
      var o = ops[i];
      if (!o) return;
      var y0 = laneTop(o[2]), size = devSize(o[2]);
      var r = el("rect", {
        x: x(o[5]) - 2, width: Math.max(1.5, x(o[6]) - x(o[5])) + 4,
        y: y0 + (o[3] / size) * laneH - 2, height: Math.max(2, (o[4] / size) * laneH) + 4,
        fill: "none", stroke: "#d00", "stroke-width": 2, class: "deviating", "data-op": i
      }, overlay);
      var t = el("title", {}, r);
      t.textContent = "op " + i + ": " + g.deviation_kinds[k];
    });
    if (g.crash_seq >= 0) {
      var c = el("line", { x1: x(g.crash_seq), x2: x(g.crash_seq), y1: top - 10, y2: height - 4, stroke: "#d00", "stroke-width": 2, id: "crash-point" }, overlay);
      var ct = el("title", {}, c);
      ct.textContent = "crash point: " + g.crash_point;
      var wrap = document.getElementById("timeline-wrap");
      wrap.scrollLeft = Math.max(0, x(g.crash_seq) - wrap.clientWidth / 2);
    }
  }
  document.querySelectorAll(".group").forEach(function (g) {
    g.addEventListener("click", function () { select(+g.dataset.group); });
  });
  select(0);
  document.body.setAttribute("data-rendered", String(opEls.length));
})();
