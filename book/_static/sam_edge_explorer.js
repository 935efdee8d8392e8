/* The SAM-edge explorer of the book's introduction: plain JavaScript, no library, no network.
 *
 * Every formula is the library's, term for term (samedge_lib/theory/edges.py):
 *   sam_edge(g, eta, rho) = 4 / (eta (1 + sqrt(1 + 8 rho/(eta g))))      (no cancellation)
 *   alpha = eta g / (2 rho),  R(alpha) = 2 / (1 + sqrt(1 + 4/alpha)) = SAM-edge / (2/eta)
 * and the iterates are SAM's steps w - eta grad(w + rho g/||g||) on the diagonal quadratic with eigenvalues
 * (lambda, mu), in the order samedge_lib.core.quadratic.sam_run takes them (eps = 0, the analysed rule).
 * tests/test_explorer.py moves the sliders in Chromium and compares what is shown with the library.
 *
 * The numbers are exposed on the container for that test: data-eta, data-rho, data-grad-norm, data-lam, data-mu,
 * data-edge, data-gd-edge, data-alpha, data-ratio, data-multiplier, data-regime and data-iterates (JSON of
 * [c1, c2] per step, from w0 to w_N), each written with JavaScript's shortest round-trip digits.
 */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var STEPS = 40;  // SAM steps drawn
  var MU_FRACTION = 1e-3;  // the flat direction's eigenvalue, as a fraction of the SAM-edge
  var C1_FRACTION = 1e-3;  // the share of ||g|| that the probed direction carries at the start
  var COLORS = { edge: "#009E73", gd: "#CC79A7", sam: "#0072B2", grow: "#D55E00", axis: "#555" };

  function samEdge(g, eta, rho) {
    var x = rho === 0 ? 0 : (8.0 * rho) / (eta * g);
    return 4.0 / (eta * (1.0 + Math.sqrt(1.0 + x)));
  }
  function alphaOf(g, eta, rho) { return (eta * g) / (2.0 * rho); }
  function edgeRatio(a) { return 2.0 / (1.0 + Math.sqrt(1.0 + 4.0 / a)); }
  function multiplier(lam, g, eta, rho) { return 1.0 - eta * lam - (eta * rho * lam * lam) / g; }

  /* SAM on the diagonal quadratic 1/2 (lam c1^2 + mu c2^2), eps = 0: the library's sam_step. */
  function samIterates(lam, mu, c0, eta, rho, steps) {
    var c1 = c0[0], c2 = c0[1], out = [[c1, c2]];
    for (var t = 0; t < steps; t++) {
      var g1 = lam * c1, g2 = mu * c2;
      var n = Math.sqrt(g1 * g1 + g2 * g2);
      var s = rho / (n + 0.0);
      var a1 = c1 + 1.0 * (s * g1), a2 = c2 + 1.0 * (s * g2);
      c1 = c1 + -eta * (lam * a1);
      c2 = c2 + -eta * (mu * a2);
      out.push([c1, c2]);
    }
    return out;
  }

  function el(tag, attrs, parent, svg) {
    var e = svg ? document.createElementNS(SVG, tag) : document.createElement(tag);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]); }
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(x) { return isFinite(x) ? Number(x.toPrecision(12)).toString() : String(x); }
  function short(x) { return Number(x.toPrecision(4)).toString(); }

  function slider(box, key, label, min, max, step, value, log) {
    var row = el("label", { "class": "see-row" }, box);
    el("span", { "class": "see-name" }, row).textContent = label;
    var input = el("input", { type: "range", min: min, max: max, step: step, value: value, "data-key": key }, row);
    var out = el("span", { "class": "see-value", "data-value-of": key }, row);
    return { input: input, out: out, log: log };
  }

  function plotFrame(parent, w, h, title) {
    var svg = el("svg", { viewBox: "0 0 " + w + " " + h, width: "100%", role: "img", "aria-label": title }, parent, true);
    return svg;
  }

  function drawCurve(svg, st) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var W = 360, H = 240, L = 48, R = 18, T = 14, B = 40, lo = -4, hi = 4;
    function X(la) { return L + ((la - lo) / (hi - lo)) * (W - L - R); }
    function Y(r) { return T + (1 - r) * (H - T - B); }
    el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: COLORS.axis }, svg, true);
    for (var k = lo; k <= hi; k += 2) {
      el("line", { x1: X(k), x2: X(k), y1: Y(0), y2: Y(0) + 4, stroke: COLORS.axis }, svg, true);
      el("text", { x: X(k), y: Y(0) + 18, "text-anchor": "middle", "class": "see-tick" }, svg, true).textContent =
        "10" + (k === 0 ? "⁰" : "");
      if (k !== 0) {
        el("text", { x: X(k) + 9, y: Y(0) + 11, "class": "see-tick see-sup" }, svg, true).textContent = String(k);
      }
    }
    [0, 0.5, 1].forEach(function (r) {
      el("text", { x: L - 6, y: Y(r) + 5, "text-anchor": "end", "class": "see-tick" }, svg, true).textContent = String(r);
    });
    el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", "class": "see-axis" }, svg, true).textContent =
      "α = η‖g‖/(2ρ)";
    el("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle", "class": "see-axis",
      transform: "rotate(-90 14 " + (T + H - B) / 2 + ")" }, svg, true).textContent = "R(α) = SAM-edge / (2/η)";
    var pts = [];
    for (var i = 0; i <= 200; i++) {
      var la = lo + ((hi - lo) * i) / 200;
      pts.push(X(la).toFixed(2) + "," + Y(edgeRatio(Math.pow(10, la))).toFixed(2));
    }
    el("polyline", { points: pts.join(" "), fill: "none", stroke: COLORS.edge, "stroke-width": 2.5 }, svg, true);
    var la0 = Math.log10(st.alpha), inside = la0 >= lo && la0 <= hi;
    var px = X(Math.min(hi, Math.max(lo, la0))), py = Y(st.ratio);
    el("line", { x1: px, x2: px, y1: Y(0), y2: py, stroke: COLORS.sam, "stroke-dasharray": "4 3" }, svg, true);
    el("circle", { cx: px, cy: py, r: 6, fill: inside ? COLORS.sam : "none", stroke: COLORS.sam, "stroke-width": 2,
      "class": "see-point" }, svg, true);
  }

  function drawIterates(svg, st) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var W = 360, H = 240, L = 48, R = 18, T = 14, B = 40;
    var c0 = Math.abs(st.iterates[0][0]), ys = st.iterates.map(function (c) { return c[0] / c0; });
    var m = Math.max.apply(null, ys.map(Math.abs));
    function X(t) { return L + (t / STEPS) * (W - L - R); }
    function Y(y) { return T + (1 - (y + m) / (2 * m)) * (H - T - B); }
    el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: COLORS.axis }, svg, true);
    el("line", { x1: L, x2: W - R, y1: Y(0), y2: Y(0), stroke: COLORS.axis, "stroke-dasharray": "2 3" }, svg, true);
    [0, STEPS / 2, STEPS].forEach(function (t) {
      el("text", { x: X(t), y: H - B + 18, "text-anchor": "middle", "class": "see-tick" }, svg, true).textContent = String(t);
    });
    [-m, 0, m].forEach(function (y) {
      el("text", { x: L - 6, y: Y(y) + 5, "text-anchor": "end", "class": "see-tick" }, svg, true).textContent = short(y);
    });
    el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", "class": "see-axis" }, svg, true).textContent = "SAM step t";
    el("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle", "class": "see-axis",
      transform: "rotate(-90 14 " + (T + H - B) / 2 + ")" }, svg, true).textContent = "c₁,ₜ / |c₁,₀|";
    var color = st.regime === "stable" ? COLORS.sam : COLORS.grow;
    el("polyline", { points: ys.map(function (y, t) { return X(t).toFixed(2) + "," + Y(y).toFixed(2); }).join(" "),
      fill: "none", stroke: color, "stroke-width": 1.5 }, svg, true);
    ys.forEach(function (y, t) { el("circle", { cx: X(t), cy: Y(y), r: 2.5, fill: color }, svg, true); });
  }

  function build(box) {
    box.textContent = "";
    box.classList.add("see-ready");
    var controls = el("div", { "class": "see-controls" }, box);
    var s = {
      eta: slider(controls, "eta", "step size η", -4, 0, 0.01, -1, true),
      rho: slider(controls, "rho", "radius ρ", -4, 0, 0.01, -1.3, true),
      g: slider(controls, "grad-norm", "gradient norm ‖g‖", -4, 2, 0.01, 0, true),
      lam: slider(controls, "lam-ratio", "λ / SAM-edge", 0.5, 1.5, 0.01, 0.9, false)
    };
    var buttons = el("div", { "class": "see-buttons" }, controls);
    var stable = el("button", { type: "button", "data-preset": "stable" }, buttons);
    stable.textContent = "λ below the edge (0.9×)";
    var cycle = el("button", { type: "button", "data-preset": "cycle" }, buttons);
    cycle.textContent = "λ above the edge (1.1×)";
    var readout = el("dl", { "class": "see-readout" }, box);
    var fields = {};
    [["edge", "SAM-edge"], ["gd-edge", "GD's edge 2/η"], ["alpha", "α = η‖g‖/(2ρ)"], ["ratio", "R(α) = SAM-edge/(2/η)"],
      ["lam", "λ"], ["multiplier", "one step multiplies c₁ by 1 − ηλ − ηρλ²/‖g‖ ="]].forEach(function (f) {
      el("dt", {}, readout).textContent = f[1];
      fields[f[0]] = el("dd", { "data-show": f[0] }, readout);
    });
    var verdict = el("p", { "class": "see-verdict", "aria-live": "polite" }, box);
    var plots = el("div", { "class": "see-plots" }, box);
    var fig1 = el("figure", {}, plots), fig2 = el("figure", {}, plots);
    var curve = plotFrame(fig1, 360, 240, "R(alpha) and the current alpha");
    el("figcaption", {}, fig1).textContent = "The edge as a fraction of 2/η depends on α alone; the dot is the current α.";
    var iter = plotFrame(fig2, 360, 240, "SAM iterates along the probed eigenvector");
    var cap2 = el("figcaption", {}, fig2);

    function update() {
      var eta = Math.pow(10, Number(s.eta.input.value));
      var rho = Math.pow(10, Number(s.rho.input.value));
      var g = Math.pow(10, Number(s.g.input.value));
      var lamRatio = Number(s.lam.input.value);
      var edge = samEdge(g, eta, rho), gd = 2.0 / eta, a = alphaOf(g, eta, rho), r = edgeRatio(a);
      var lam = lamRatio * edge, mu = MU_FRACTION * edge;
      var c1 = (C1_FRACTION * g) / lam, c2 = Math.sqrt(g * g - (lam * c1) * (lam * c1)) / mu;
      var mult = multiplier(lam, g, eta, rho);
      var its = samIterates(lam, mu, [c1, c2], eta, rho, STEPS);
      var st = { eta: eta, rho: rho, g: g, lam: lam, mu: mu, edge: edge, gd: gd, alpha: a, ratio: r, mult: mult,
        iterates: its, regime: Math.abs(mult) < 1 ? "stable" : "2-cycle" };
      s.eta.out.textContent = short(eta);
      s.rho.out.textContent = short(rho);
      s.g.out.textContent = short(g);
      s.lam.out.textContent = lamRatio.toFixed(2);
      fields.edge.textContent = fmt(edge);
      fields["gd-edge"].textContent = fmt(gd);
      fields.alpha.textContent = fmt(a);
      fields.ratio.textContent = fmt(r);
      fields.lam.textContent = fmt(lam);
      fields.multiplier.textContent = fmt(mult);
      var data = { eta: eta, rho: rho, "grad-norm": g, lam: lam, mu: mu, edge: edge, "gd-edge": gd, alpha: a,
        ratio: r, multiplier: mult, regime: st.regime, steps: STEPS, iterates: JSON.stringify(its) };
      for (var k in data) { if (Object.prototype.hasOwnProperty.call(data, k)) box.setAttribute("data-" + k, String(data[k])); }
      verdict.textContent = st.regime === "stable"
        ? "λ = " + short(lamRatio) + " × SAM-edge: |multiplier| = " + short(Math.abs(mult)) +
          " < 1, so SAM is stable along this direction: the component shrinks, alternating in sign."
        : "λ = " + short(lamRatio) + " × SAM-edge: |multiplier| = " + short(Math.abs(mult)) +
          " ≥ 1, so SAM is unstable along this direction: a growing 2-cycle, which stops growing only once the" +
          " direction's own gradient has raised ‖g‖, and with it the edge, up to λ.";
      cap2.textContent = "The component c₁ along the eigenvector with eigenvalue λ, on the quadratic with eigenvalues" +
        " (λ, " + short(MU_FRACTION) + " × SAM-edge) started where c₁ carries " + short(C1_FRACTION * 100) +
        " % of ‖g‖ = " + short(g) + "; " + STEPS + " SAM steps.";
      drawCurve(curve, st);
      drawIterates(iter, st);
    }
    Object.keys(s).forEach(function (k) { s[k].input.addEventListener("input", update); });
    stable.addEventListener("click", function () { s.lam.input.value = "0.9"; update(); });
    cycle.addEventListener("click", function () { s.lam.input.value = "1.1"; update(); });
    update();
  }

  function start() {
    var boxes = document.querySelectorAll(".sam-edge-explorer");
    for (var i = 0; i < boxes.length; i++) build(boxes[i]);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
