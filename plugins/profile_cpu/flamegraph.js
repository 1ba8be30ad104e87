// The flame graph's behaviour: zoom on click, search, details on hover (see formats.py).
var svg, details, searchbtn, matchedtxt, frames, unzoombtn, searching = null;
function init(evt) {
  svg = document.documentElement;
  details = document.getElementById("details").firstChild;
  searchbtn = document.getElementById("search");
  matchedtxt = document.getElementById("matched");
  unzoombtn = document.getElementById("unzoom");
  frames = document.getElementById("frames");
  frames.addEventListener("click", function (e) {
    var g = e.target.closest("g.f"); if (g) zoom(g);
  });
  frames.addEventListener("mouseover", function (e) {
    var g = e.target.closest("g.f"); if (g) details.nodeValue = g.querySelector("title").textContent;
  });
  frames.addEventListener("mouseout", function () { details.nodeValue = " "; });
  window.addEventListener("keydown", function (e) {
    if (e.keyCode === 114 || ((e.ctrlKey || e.metaKey) && e.keyCode === 70)) { e.preventDefault(); search_prompt(); }
  });
  fit_all();
}
function attr(e, n) { return parseFloat(e.getAttribute(n)); }
function fit(g) {
  var r = g.querySelector("rect"), t = g.querySelector("text");
  var w = attr(r, "width") - 3, name = g.getAttribute("data-name");
  t.setAttribute("x", attr(r, "x") + 3);
  if (w < 14) { t.textContent = ""; return; }
  var n = Math.floor(w / 7);
  t.textContent = name.length <= n ? name : name.substring(0, Math.max(n - 2, 0)) + "..";
}
function fit_all() { var gs = frames.querySelectorAll("g.f"); for (var i = 0; i < gs.length; i++) fit(gs[i]); }
function zoom(node) {
  var r = node.querySelector("rect"), x0 = attr(r, "data-x"), w0 = attr(r, "data-w"), y0 = attr(r, "y");
  var scale = (svg.width.baseVal.value - 2 * XPAD) / w0;
  var gs = frames.querySelectorAll("g.f");
  unzoombtn.classList.remove("hide");
  for (var i = 0; i < gs.length; i++) {
    var rr = gs[i].querySelector("rect"), x = attr(rr, "data-x"), w = attr(rr, "data-w"), y = attr(rr, "y");
    var inside = x >= x0 - 1e-6 && x + w <= x0 + w0 + 1e-6;
    var contains = x <= x0 + 1e-6 && x + w >= x0 + w0 - 1e-6;
    gs[i].classList.remove("parent");
    if (y > y0 && contains) {
      rr.setAttribute("x", XPAD); rr.setAttribute("width", svg.width.baseVal.value - 2 * XPAD);
      gs[i].classList.add("parent");
    } else if (y <= y0 && inside) {
      rr.setAttribute("x", XPAD + (x - x0) * scale); rr.setAttribute("width", w * scale);
    } else { gs[i].classList.add("hide"); continue; }
    gs[i].classList.remove("hide");
    fit(gs[i]);
  }
}
function unzoom() {
  unzoombtn.classList.add("hide");
  var gs = frames.querySelectorAll("g.f");
  for (var i = 0; i < gs.length; i++) {
    var rr = gs[i].querySelector("rect");
    gs[i].classList.remove("hide"); gs[i].classList.remove("parent");
    rr.setAttribute("x", attr(rr, "data-x")); rr.setAttribute("width", attr(rr, "data-w"));
    fit(gs[i]);
  }
}
function search_prompt() {
  if (searching) { reset_search(); return; }
  var term = prompt("Search for (regular expression):", "");
  if (term) search(term);
}
function reset_search() {
  var rs = frames.querySelectorAll("rect");
  for (var i = 0; i < rs.length; i++) rs[i].setAttribute("fill", rs[i].getAttribute("data-fill"));
  searching = null; searchbtn.classList.remove("show"); searchbtn.firstChild.nodeValue = "Search";
  matchedtxt.classList.add("hide");
}
function search(term) {
  var re;
  try { re = new RegExp(term); } catch (e) { alert("Not a regular expression: " + term); return; }
  var gs = frames.querySelectorAll("g.f"), total = 0, spans = [];
  for (var i = 0; i < gs.length; i++) {
    var r = gs[i].querySelector("rect");
    if (attr(r, "y") === attr(document.getElementById("root"), "y")) total = attr(r, "data-w");
    if (re.test(gs[i].getAttribute("data-name"))) {
      r.setAttribute("fill", "rgb(230,0,230)");
      spans.push([attr(r, "data-x"), attr(r, "data-x") + attr(r, "data-w")]);
    }
  }
  spans.sort(function (a, b) { return a[0] - b[0]; });
  var covered = 0, end = -1;
  for (var j = 0; j < spans.length; j++) {
    if (spans[j][0] >= end) { covered += spans[j][1] - spans[j][0]; end = spans[j][1]; }
    else if (spans[j][1] > end) { covered += spans[j][1] - end; end = spans[j][1]; }
  }
  searching = term; searchbtn.classList.add("show"); searchbtn.firstChild.nodeValue = "Reset Search";
  matchedtxt.classList.remove("hide");
  matchedtxt.firstChild.nodeValue = "Matched: " + (total ? (100 * covered / total).toFixed(1) : "0") + "%";
}
