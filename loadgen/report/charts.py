"""Interactive time-series charts for loadgen's HTML pages (``report.html``, ``compare.html``).

The charts are drawn by uPlot (MIT, vendored unchanged in ``loadgen/report/vendor/``, see its
README): a canvas per chart, a legend under it that reads out every series' value at the
cursor (cursors of all charts on a page move together), drag across a chart to zoom its x
axis, double-click to see the whole range again. Everything is inlined: the library, its CSS
and each chart's data as JSON, so a page opens offline and stays one file.

A page puts :func:`chart_assets` once in its ``<head>`` and any number of :func:`time_chart`
blocks in its body; the script draws every chart when the page has loaded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from functools import cache
from html import escape
from pathlib import Path
from typing import Any

from loadgen.report.svg import PALETTE  # the SVG charts' colours, in the same order

VENDOR = Path(__file__).with_name("vendor")


# Why a canvas scaled by CSS for print: the page is laid out on A4 without running any script,
# so the chart keeps its drawing and only shrinks to the printable width.
_CSS = """
.tchart{margin:14px 0;break-inside:avoid;page-break-inside:avoid}
.tchart .u-title{font-size:14px;font-weight:bold;text-align:left;padding-left:8px}
.tchart .u-legend{font-size:12px} .tchart .u-legend .u-value{min-width:5.5em;display:inline-block}
.tchart.empty{color:#888;border:1px dashed #ccc;padding:12px}
@media print{.tchart .uplot,.tchart .u-wrap{width:100%!important;height:auto!important}
.tchart canvas{width:100%!important;height:auto!important;position:static!important}
.tchart .u-over,.tchart .u-under,.tchart .u-legend .u-value{display:none}}
"""

# Draws every .tchart of the page from its JSON. Values arrive rounded; the read-out shows them
# with the chart's unit. Bands (a stepped run's steps) are shaded before the series are drawn.
_SCRIPT = r"""
(function(){"use strict";
var PALETTE=%(palette)s;
function num(v){if(v==null)return "-";var a=Math.abs(v);
 return a>=1000?Math.round(v).toLocaleString("en"):a>=100?v.toFixed(0):a>=10?v.toFixed(1):String(+v.toPrecision(3));}
function tick(v){return v==null?"":Math.abs(v)>=1000?Math.round(v).toLocaleString("en"):String(+v.toPrecision(4));}
function xs(spec){if(spec.x)return spec.x;var out=new Array(spec.n);for(var i=0;i<spec.n;i++)out[i]=spec.x0+i*spec.dx;
 return out;}
function bands(spec){return function(u){var ctx=u.ctx;ctx.save();ctx.fillStyle="rgba(0,0,0,0.045)";
 ctx.font=(10*devicePixelRatio)+"px sans-serif";(spec.bands||[]).forEach(function(b){
  var a=u.valToPos(b[0],"x",true),z=u.valToPos(b[1],"x",true);if(z<=a)return;
  ctx.fillRect(a,u.bbox.top,z-a,u.bbox.height);ctx.fillStyle="#666";
  ctx.fillText(b[2],a+4*devicePixelRatio,u.bbox.top+12*devicePixelRatio);ctx.fillStyle="rgba(0,0,0,0.045)";});
 ctx.restore();};}
function draw(el){var spec=JSON.parse(el.querySelector("script").textContent);
 var unit=spec.unit?" "+spec.unit:"";
 var series=[{label:spec.xlabel,value:function(u,v){return v==null?"-":num(v);}}].concat(spec.series.map(
  function(s,i){return {label:s.label,stroke:PALETTE[i%%PALETTE.length],width:1.6,dash:s.dashed?[6,4]:undefined,
   spanGaps:false,value:function(u,v){return v==null?"-":num(v)+unit;}};}));
 var opts={title:spec.title,width:Math.max(el.clientWidth,300),height:260,series:series,
  cursor:{sync:{key:"loadgen"},drag:{x:true,y:false}},legend:{live:true},
  scales:{x:{time:false},y:spec.log?{distr:3}:{range:function(u,lo,hi){return [Math.min(0,lo),hi>0?hi*1.05:1];}}},
  axes:[{label:spec.xlabel,incrs:[1,2,5,10,15,30,60,120,300,600,900,1800,3600,7200,21600,86400]},
   {label:spec.unit,size:64,values:function(u,t){return t.map(tick);}}],
  hooks:{drawClear:[bands(spec)]}};
 var plot=new uPlot(opts,[xs(spec)].concat(spec.series.map(function(s){return s.values;})),el);
 el.lgPlot=plot;
 if(window.ResizeObserver)new ResizeObserver(function(){var w=Math.max(el.clientWidth,300);
  if(w!==plot.width)plot.setSize({width:w,height:260});}).observe(el);}
function all(){document.querySelectorAll(".tchart[data-chart]").forEach(draw);}
if(document.readyState==="loading")document.addEventListener("DOMContentLoaded",all);else all();
})();
"""


@cache
def chart_assets() -> str:
    """The block a page puts once in its ``<head>``: uPlot's CSS and script (inlined), the charts'
    CSS (print: every chart shrinks to the page width) and the script that draws each
    :func:`time_chart` of the page once it has loaded."""
    css = (VENDOR / "uPlot.min.css").read_text(encoding="utf-8")
    library = (VENDOR / "uPlot.iife.min.js").read_text(encoding="utf-8")
    script = _SCRIPT % {"palette": json.dumps(PALETTE)}
    return f"<style>{css}{_CSS}</style><script>{library}</script><script>{script}</script>"


def time_chart(title: str, unit: str, x: Sequence[float], series: Sequence[tuple[str, Sequence[float | None]]], *,
               log: bool = False, dashed: Collection[str] = (), bands: Sequence[tuple[float, float, str]] = (),
               x_label: str = "seconds", panel: str = "") -> str:
    """One interactive chart of several series over a shared x axis, as an HTML block.

    - ``title``: shown above the chart; ``unit``: the y axis label and the read-out's unit ("ms", "/s").
    - ``x``: the x values (seconds into the run), ascending; ``series``: ``(label, values)`` pairs, ``values[i]``
      at ``x[i]``, None where a series has no value (drawn as a gap); a series shorter than ``x`` ends early
      (runs of different lengths overlaid on the longest one's seconds), a longer one is a ValueError.
    - ``log``: a logarithmic y axis (values <= 0 become gaps); ``dashed``: labels of series drawn dashed;
      ``bands``: ``(x0, x1, label)`` ranges shaded behind the series (steps); ``x_label``: the x axis
      label; ``panel``: the block's ``data-panel`` name (what tests and styles find it by).

    The page needs :func:`chart_assets` once. Values are kept to 4 significant digits: a read-out
    needs no more, and an hour of seconds stays small.
    """
    attr = f' data-panel="{escape(panel)}"' if panel else ""
    if any(len(values) > len(x) for _, values in series):
        raise ValueError(f"{title}: a series has more values than x")
    columns = [(label, [_value(v, log) for v in values] + [None] * (len(x) - len(values))) for label, values in series]
    if not x or not any(v is not None for _, values in columns for v in values):
        return f'<div class="tchart empty"{attr}><b>{escape(title)}</b>: no data</div>'
    spec: dict[str, Any] = {"title": title, "unit": unit, "xlabel": x_label, "log": log, **_x_axis(x),
                            "series": [{"label": label, "values": values, **({"dashed": 1} if label in dashed else {})}
                                       for label, values in columns],
                            "bands": [[a, b, label] for a, b, label in bands]}
    # "<" escaped: no label can close the script element early.
    data = json.dumps(spec, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return f'<div class="tchart" data-chart{attr}><script type="application/json">{data}</script></div>'


def _value(value: float | None, log: bool) -> float | int | None:
    if value is None or not math.isfinite(value) or (log and value <= 0):
        return None
    rounded = float(f"{value:.4g}")
    return int(rounded) if rounded.is_integer() and abs(rounded) < 1e15 else rounded


def _x_axis(x: Sequence[float]) -> dict[str, Any]:
    """The x values, or, when they step evenly (whole seconds, the usual case), start, step and count."""
    if len(x) >= 2:
        step = x[1] - x[0]
        if step > 0 and all(abs(b - a - step) < 1e-9 for a, b in zip(x, x[1:], strict=False)):
            return {"x0": x[0], "dx": step, "n": len(x)}
    return {"x": list(x)}
