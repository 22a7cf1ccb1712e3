// A small line chart on a canvas: a rolling window of points per series, auto-scaled, no library.
"use strict";
class LiveChart {
  constructor(canvas, legend, series, points = 120) {
    this.canvas = canvas; this.series = series; this.points = points;
    this.data = Object.fromEntries(series.map(s => [s.key, []]));
    legend.innerHTML = series.map(s => `<span><i style="background:${s.color}"></i>${s.label}</span>`).join("");
  }
  push(values) {
    for (const s of this.series) {
      const column = this.data[s.key];
      column.push(values[s.key] == null ? null : Number(values[s.key]));
      if (column.length > this.points) column.shift();
    }
    this.draw();
  }
  draw() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (c.width !== w * dpr) { c.width = w * dpr; c.height = h * dpr; }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    let top = 0;
    for (const s of this.series) for (const v of this.data[s.key]) if (v != null && v > top) top = v;
    top = top > 0 ? top * 1.15 : 1;
    g.strokeStyle = "#2e353f"; g.fillStyle = "#97a1ad"; g.font = "11px sans-serif"; g.lineWidth = 1;
    for (let i = 0; i <= 2; i++) {
      const y = 4 + (h - 8) * i / 2;
      g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
      g.fillText((top * (1 - i / 2)).toFixed(top < 10 ? 1 : 0), 2, y + (i === 0 ? 10 : -2));
    }
    for (const s of this.series) {
      const column = this.data[s.key];
      g.strokeStyle = s.color; g.lineWidth = 1.6; g.beginPath();
      let pen = false;
      column.forEach((v, i) => {
        if (v == null) { pen = false; return; }
        const x = w * (i + this.points - column.length) / (this.points - 1);
        const y = 4 + (h - 8) * (1 - v / top);
        if (pen) g.lineTo(x, y); else g.moveTo(x, y);
        pen = true;
      });
      g.stroke();
    }
  }
}
