/**
 * A small SVG line chart for time series (bench/lib/report.ts draws bars of ratios; the soak needs
 * values over time): stacked panels sharing the time axis, vertical markers for events.
 */

export interface Series {
  label: string;
  color: string;
  dashed?: boolean;
  /** [seconds since start, value] */
  points: Array<[number, number]>;
}

export interface Panel {
  title: string;
  series: Series[];
}

export interface Marker {
  /** Seconds since start. */
  t: number;
  /** One or two characters drawn at the top of the line. */
  label: string;
  color: string;
  title: string;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** 1, 2, 2.5 or 5 × a power of ten, so that about `count` steps cover `max`. */
function niceStep(max: number, count = 5): number {
  if (!(max > 0)) return 1;
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

const fmt = (n: number): string => (Math.abs(n) >= 1000 ? `${+(n / 1000).toFixed(1)}k` : `${+n.toFixed(1)}`);

export function lineChart(opts: { title: string; subtitle?: string; duration: number; panels: Panel[]; markers?: Marker[] }): string {
  const width = 960;
  const left = 64;
  const right = 170; // legend column
  const panelH = 200;
  const gap = 56;
  const top = opts.subtitle ? 56 : 40;
  const plotW = width - left - right;
  const duration = Math.max(opts.duration, 1);
  const height = top + opts.panels.length * (panelH + gap) + 10;
  const xOf = (t: number): number => left + (Math.min(Math.max(t, 0), duration) / duration) * plotW;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`);
  out.push('<rect width="100%" height="100%" fill="white"/>');
  out.push(`<text x="${left}" y="20" font-size="14" font-weight="bold">${esc(opts.title)}</text>`);
  if (opts.subtitle) out.push(`<text x="${left}" y="38" fill="#555">${esc(opts.subtitle)}</text>`);

  // Time ticks: minutes when it is long enough, else seconds.
  const tickS = duration >= 180 ? niceStep(duration / 60, 8) * 60 : niceStep(duration, 6);
  opts.panels.forEach((panel, pi) => {
    const y0 = top + pi * (panelH + gap) + 16;
    const values = panel.series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
    const step = niceStep(Math.max(...values, 0) * 1.05 || 1);
    const maxV = step * Math.max(1, Math.ceil((Math.max(...values, 0) * 1.05) / step));
    const yOf = (v: number): number => y0 + panelH - (v / maxV) * panelH;
    out.push(`<text x="${left}" y="${y0 - 6}" font-weight="bold">${esc(panel.title)}</text>`);
    for (let v = 0; v <= maxV + 1e-9; v += step) {
      out.push(`<line x1="${left}" x2="${left + plotW}" y1="${yOf(v)}" y2="${yOf(v)}" stroke="#e4e4e4"/><text x="${left - 6}" y="${yOf(v) + 4}" text-anchor="end">${fmt(v)}</text>`);
    }
    for (let t = 0; t <= duration + 1e-9; t += tickS) {
      const label = duration >= 180 ? `${+(t / 60).toFixed(1)} min` : `${+t.toFixed(1)} s`;
      out.push(`<line x1="${xOf(t)}" x2="${xOf(t)}" y1="${y0 + panelH}" y2="${y0 + panelH + 4}" stroke="#333"/><text x="${xOf(t)}" y="${y0 + panelH + 16}" text-anchor="middle">${label}</text>`);
    }
    out.push(`<line x1="${left}" x2="${left + plotW}" y1="${y0 + panelH}" y2="${y0 + panelH}" stroke="#333"/><line x1="${left}" x2="${left}" y1="${y0}" y2="${y0 + panelH}" stroke="#333"/>`);
    for (const m of opts.markers ?? []) {
      const x = xOf(m.t);
      out.push(`<line x1="${x}" x2="${x}" y1="${y0}" y2="${y0 + panelH}" stroke="${m.color}" stroke-dasharray="3 3" opacity="0.7"><title>${esc(m.title)}</title></line>`);
      if (pi === 0) out.push(`<text x="${x}" y="${y0 + 10}" text-anchor="middle" fill="${m.color}" font-size="9">${esc(m.label)}</text>`);
    }
    panel.series.forEach((s, si) => {
      const pts = s.points.filter((p) => Number.isFinite(p[1]));
      if (pts.length > 0) {
        const d = pts.map((p, i) => `${i === 0 ? 'M' : 'L'}${xOf(p[0]).toFixed(1)},${yOf(p[1]).toFixed(1)}`).join(' ');
        out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"${s.dashed ? ' stroke-dasharray="5 3"' : ''}><title>${esc(s.label)}</title></path>`);
      }
      const ly = y0 + 8 + si * 16;
      const lx = left + plotW + 14;
      out.push(`<line x1="${lx}" x2="${lx + 22}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/><text x="${lx + 28}" y="${ly + 4}">${esc(s.label)}</text>`);
    });
  });
  out.push('</svg>');
  return out.join('\n');
}
