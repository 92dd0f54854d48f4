/** Aggregation (medians over repeats, spread), ratios against the reference peer(s), table, JSON, SVG. */
import type { Measurement, Scenario } from '../scenarios/types.js';
import { PEERS, REFERENCE } from './peers.js';

export interface Row {
  scenario: string;
  variant: string;
  peer: string;
  repeats: number;
  median: Record<string, number>;
  min: Record<string, number>;
  max: Record<string, number>;
  /** Median cost / reference median cost (lower is better). */
  costRatio?: number;
  /** Median throughput / reference median throughput (higher is better). */
  throughputRatio?: number;
  /** Variant of the reference row the ratios were taken against, when not the same. */
  against?: string;
  /** The same two ratios against the scenario's second reference (mosquitto for MQTT). */
  costRatio2?: number;
  throughputRatio2?: number;
}

/** The peer a scenario's ratios are taken against (raw ws unless it names another). */
export const referenceOf = (scenario: Scenario | undefined): string => scenario?.reference ?? REFERENCE;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

export function aggregate(measurements: Measurement[], scenarios: Scenario[]): Row[] {
  const byKey = new Map<string, Measurement[]>();
  for (const m of measurements) {
    const key = `${m.scenario}\u0000${m.variant}\u0000${m.peer}`;
    byKey.set(key, [...(byKey.get(key) ?? []), m]);
  }
  const rows: Row[] = [];
  for (const list of byKey.values()) {
    const names = Object.keys(list[0].metrics);
    const pick = (f: (xs: number[]) => number): Record<string, number> =>
      Object.fromEntries(names.map((n) => [n, f(list.map((m) => m.metrics[n]))]));
    rows.push({
      scenario: list[0].scenario,
      variant: list[0].variant,
      peer: list[0].peer,
      repeats: list.length,
      median: pick(median),
      min: pick((xs) => Math.min(...xs)),
      max: pick((xs) => Math.max(...xs)),
    });
  }
  for (const row of rows) {
    const scenario = scenarios.find((s) => s.key === row.scenario)!;
    const reference = referenceOf(scenario);
    let ref = rows.find((r) => r.scenario === row.scenario && r.variant === row.variant && r.peer === reference);
    if (!ref) {
      ref = rows.find((r) => r.scenario === row.scenario && r.peer === reference);
      if (ref) row.against = ref.variant;
    }
    if (ref) {
      row.costRatio = row.median[scenario.cost.metric] / ref.median[scenario.cost.metric];
      if (scenario.throughput) row.throughputRatio = row.median[scenario.throughput.metric] / ref.median[scenario.throughput.metric];
    }
    const second = scenario.secondReference && rows.find((r) => r.scenario === row.scenario && r.variant === row.variant && r.peer === scenario.secondReference);
    if (second) {
      row.costRatio2 = row.median[scenario.cost.metric] / second.median[scenario.cost.metric];
      if (scenario.throughput) row.throughputRatio2 = row.median[scenario.throughput.metric] / second.median[scenario.throughput.metric];
    }
  }
  const order = Object.keys(PEERS);
  const scenarioOrder = scenarios.map((s) => s.key);
  // Variants in the order they were measured (scenario files list them meaningfully).
  const variantOrder = [...new Set(measurements.map((m) => m.variant))];
  return rows.sort(
    (a, b) =>
      scenarioOrder.indexOf(a.scenario) - scenarioOrder.indexOf(b.scenario) ||
      variantOrder.indexOf(a.variant) - variantOrder.indexOf(b.variant) ||
      order.indexOf(a.peer) - order.indexOf(b.peer),
  );
}

const fmt = (n: number | undefined, digits = 0): string =>
  n === undefined || !Number.isFinite(n) ? '–' : n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

const spreadPct = (row: Row, metric: string): string => {
  if (row.repeats < 2) return '';
  const m = row.median[metric];
  return ` ±${fmt((100 * (row.max[metric] - row.min[metric])) / 2 / m)}%`;
};

export function markdown(rows: Row[], scenarios: Scenario[], notes: string[] = []): string {
  const lines: string[] = [];
  for (const scenario of scenarios) {
    const own = rows.filter((r) => r.scenario === scenario.key);
    if (own.length === 0) continue;
    const reference = referenceOf(scenario);
    const refLabel = PEERS[reference]?.label ?? reference;
    const second = scenario.secondReference;
    const secondLabel = second ? (PEERS[second]?.label ?? second) : '';
    lines.push(`**${scenario.title}** — ratios against ${refLabel}${second ? ` and ${secondLabel}` : ''} in the same run (cost: lower is better; throughput: higher is better)`, '');
    if (scenario.key === 'idle') {
      lines.push('| variant | server | KB RSS / conn (all processes) | KB RSS / conn (connection-holding) | connects/s | cost ratio | connect-rate ratio |', '|---|---|---|---|---|---|---|');
      for (const r of own) {
        lines.push(
          `| ${r.variant} | ${PEERS[r.peer]?.label ?? r.peer} | ${fmt(r.median.rssKbPerConn, 1)}${spreadPct(r, 'rssKbPerConn')} | ${fmt(r.median.frontRssKbPerConn, 1)} | ${fmt(r.median.connectsPerSec)} | ${fmt(r.costRatio, 2)}${r.against ? ` (vs ${r.against})` : ''} | ${fmt(r.throughputRatio, 2)} |`,
        );
      }
    } else if (scenario.key === 'reload') {
      lines.push(
        '| server | echoes/s during the reload | same server steady | reload s | lost | dropped | doubled | throughput ratio (vs steady raw ws) |',
        '|---|---|---|---|---|---|---|---|',
      );
      for (const r of own) {
        const during = r.peer === reference ? '– (nothing to reload)' : `${fmt(r.median.perSec)}${spreadPct(r, 'perSec')}`;
        const worst = (m: string): string => fmt(r.max[m]);
        lines.push(
          `| ${PEERS[r.peer]?.label ?? r.peer} | ${during} | ${fmt(r.peer === reference ? r.median.perSec : r.median.steadyPerSec)} | ${r.peer === reference ? '–' : fmt(r.median.reloadMs / 1000, 1)} | ${worst('lost')} | ${worst('dropped')} | ${worst('dups')} | ${r.peer === reference ? '' : fmt(r.throughputRatio, 2)} |`,
        );
      }
      lines.push('', 'lost, dropped and doubled are the worst of the repeats.');
    } else {
      const unit = scenario.unit ?? (scenario.key === 'broadcast' ? 'deliveries/s' : 'echoes/s');
      const vs = second ? ` vs ${refLabel}` : '';
      const secondCols = second ? ` cost vs ${secondLabel} | throughput vs ${secondLabel} |` : '';
      lines.push(
        `| variant | server | ${unit} | p50 µs | p99 µs | ${scenario.cost.label} | of it in gateways | server CPU % | cost ratio${vs} | throughput ratio${vs} |${secondCols} p99 ratio${vs} |`,
        `|---|---|---|---|---|---|---|---|---|---|${second ? '---|---|' : ''}---|`,
      );
      for (const r of own) {
        const ref = own.find((x) => x.variant === r.variant && x.peer === reference);
        const secondVals = second ? ` ${fmt(r.costRatio2, 2)} | ${fmt(r.throughputRatio2, 2)} |` : '';
        lines.push(
          `| ${r.variant} | ${PEERS[r.peer]?.label ?? r.peer} | ${fmt(r.median.perSec)}${spreadPct(r, 'perSec')} | ${fmt(r.median.p50Us)} | ${fmt(r.median.p99Us)} | ${fmt(r.median[scenario.cost.metric], 2)}${spreadPct(r, scenario.cost.metric)} | ${r.peer.startsWith('gw') ? fmt(r.median[`front${scenario.cost.metric[0].toUpperCase()}${scenario.cost.metric.slice(1)}`], 2) : ''} | ${fmt(r.median.serverCpuPct)} | ${fmt(r.costRatio, 2)} | ${fmt(r.throughputRatio, 2)} |${secondVals} ${fmt(ref ? r.median.p99Us / ref.median.p99Us : undefined, 2)} |`,
        );
      }
    }
    lines.push('');
  }
  if (notes.length > 0) lines.push('Notes:', '', ...notes.map((n) => `- ${n}`), '');
  return lines.join('\n');
}

/**
 * Grouped bars: for every scenario variant, one bar per peer other than that scenario's reference
 * (raw ws; Aedes for MQTT, where mosquitto is a bar against Aedes), two panels.
 */
export function svg(rows: Row[], title: string, scenarios: Scenario[] = []): string {
  const refOf = (scenario: string): string => referenceOf(scenarios.find((s) => s.key === scenario));
  const peers = Object.keys(PEERS).filter((p) => rows.some((r) => r.peer === p && r.peer !== refOf(r.scenario)));
  const colors = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1', '#edc948', '#9c755f'];
  const colorOf = (p: string): string => colors[peers.indexOf(p) % colors.length];
  const groups = [...new Set(rows.map((r) => `${r.scenario}\u0000${r.variant}`))].map((g) => {
    const [scenario, variant] = g.split('\u0000');
    // Only the peers measured in this group, the reference left out: groups stay compact.
    const bars = peers.filter((p) => p !== refOf(scenario) && rows.some((r) => r.scenario === scenario && r.variant === variant && r.peer === p));
    return { scenario, variant, bars };
  });
  const panels: Array<{ name: string; pick: (r: Row) => number | undefined; note: string }> = [
    { name: 'Cost vs raw ws, MQTT vs Aedes (server CPU per message; RSS per idle connection)', pick: (r) => r.costRatio, note: 'lower is better' },
    { name: 'Throughput vs raw ws, MQTT vs Aedes (messages/s; connects/s for idle)', pick: (r) => r.throughputRatio, note: 'higher is better' },
  ];
  const left = 50;
  const groupX: number[] = [];
  let x = left;
  for (const g of groups) {
    groupX.push(x);
    x += Math.max(96, g.bars.length * 18 + 24);
  }
  const legendPerLine = 6;
  const legendLines = Math.ceil(peers.length / legendPerLine);
  const width = Math.max(x + 20, left + Math.min(peers.length, legendPerLine) * 170);
  const panelH = 230;
  const top = 50 + legendLines * 16;
  const height = top + panels.length * (panelH + 80) + 10;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="${left}" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`);
  peers.forEach((p, i) => {
    const lx = left + (i % legendPerLine) * 170;
    const ly = 32 + Math.floor(i / legendPerLine) * 16;
    out.push(`<rect x="${lx}" y="${ly}" width="12" height="12" fill="${colorOf(p)}"/><text x="${lx + 16}" y="${ly + 10}">${esc(PEERS[p].label)}</text>`);
  });
  panels.forEach((panel, pi) => {
    const y0 = top + pi * (panelH + 80) + 20;
    const values = rows.map(panel.pick).filter((v): v is number => v !== undefined && Number.isFinite(v));
    const maxV = Math.max(1.2, Math.ceil(Math.max(...values, 1) * 2) / 2);
    const yOf = (v: number): number => y0 + panelH - (v / maxV) * panelH;
    out.push(`<text x="${left}" y="${y0 - 6}" font-weight="bold">${esc(panel.name)} — ${panel.note}</text>`);
    for (let t = 0; t <= maxV + 1e-9; t += maxV > 4 ? 1 : 0.5) {
      out.push(`<line x1="${left}" x2="${width - 10}" y1="${yOf(t)}" y2="${yOf(t)}" stroke="#ddd"/><text x="${left - 6}" y="${yOf(t) + 4}" text-anchor="end">${t.toFixed(1)}×</text>`);
    }
    out.push(`<line x1="${left}" x2="${width - 10}" y1="${yOf(1)}" y2="${yOf(1)}" stroke="#333" stroke-dasharray="4 3"/>`);
    groups.forEach(({ scenario, variant, bars }, gi) => {
      const gx = groupX[gi] + 12;
      bars.forEach((p, i) => {
        const row = rows.find((r) => r.scenario === scenario && r.variant === variant && r.peer === p);
        const v = row ? panel.pick(row) : undefined;
        if (v === undefined || !Number.isFinite(v)) return;
        const bx = gx + i * 18;
        out.push(`<rect x="${bx}" y="${yOf(v)}" width="16" height="${y0 + panelH - yOf(v)}" fill="${colorOf(p)}"><title>${esc(`${PEERS[p].label}, ${scenario} ${variant}: ${v.toFixed(2)}× ${PEERS[refOf(scenario)]?.label ?? refOf(scenario)}`)}</title></rect>`);
      });
      const lx = gx + (bars.length * 18) / 2;
      out.push(`<text x="${lx}" y="${y0 + panelH + 14}" text-anchor="middle">${esc(scenario)}</text><text x="${lx}" y="${y0 + panelH + 27}" text-anchor="middle">${esc(variant)}</text>`);
    });
  });
  out.push('</svg>');
  return out.join('\n');
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
