/** The soak's results: the JSON written to results/<date>.json, its markdown report and its chart. */
import type { Action, AppKey } from './apps.ts';
import { lineChart, type Marker, type Series } from './chart.ts';
import type { Counters } from './loads/types.ts';

export interface AppSample extends Counters {
  totalKb: number;
  gatewayKb: number;
  workerKb: number;
  procs: number;
}

export interface Sample {
  /** Seconds since the load started. */
  t: number;
  apps: Partial<Record<AppKey, AppSample>>;
}

export interface AppResult {
  template: string;
  clients: number;
  load: string;
  counters: Counters;
  /** expected − delivered after the drain (undefined where nothing is owed: game). */
  lost?: number;
  reloads: number;
  kills: number;
  rssStartKb: number;
  rssEndKb: number;
  gatewayStartKb: number;
  gatewayEndKb: number;
  /** Did `start.ts stop` end the master by itself (exit code), or was the group killed? */
  stop: string;
  details: Record<string, unknown>;
  /** Warning/error log lines of the app, counted by message: while running, and while stopping. */
  logs: { run: Record<string, number>; stop: Record<string, number> };
}

export interface GameFreeze {
  /** The action it follows (index into actions), or -1 when no action explains it. */
  action: number;
  /** Seconds since the load started. */
  t: number;
  ms: number;
  rooms: number;
  players: number;
}

export interface Result {
  date: string;
  passed: boolean;
  /** Why the run ended early (signal, error). */
  aborted?: string;
  options: Record<string, unknown>;
  machine: { cpus: number; loadavgStart: number[]; loadavgEnd: number[]; node: string; /** The soak process's CPU over the load, % of one core. */ soakCpuPct?: number; notes: string[] };
  /** Seconds the load actually ran. */
  durationS: number;
  apps: Partial<Record<AppKey, AppResult>>;
  samples: Sample[];
  actions: Action[];
  freezes: GameFreeze[];
  problems: string[];
  /** Pids of the apps still alive after everything was stopped. */
  leftovers: number[];
}

export const COLORS: Record<AppKey, string> = { chat: '#4e79a7', game: '#e15759', mqtt: '#59a14f' };
const UNITS: Record<AppKey, { sent: string; received: string }> = {
  chat: { sent: 'says/s', received: 'deliveries/s' },
  game: { sent: 'inputs/s', received: 'states/s' },
  mqtt: { sent: 'publishes/s', received: 'deliveries/s' },
};

const mb = (kb: number): string => (kb / 1024).toFixed(0);
const n0 = (n: number | undefined): string => (n === undefined ? '–' : n.toLocaleString('en-US'));
const r0 = (n: number): string => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: n < 10 ? 1 : 0 }) : '–');
const secs = (ms: number | null): string => (ms === null ? '–' : `${(ms / 1000).toFixed(1)} s`);
const clock = (t: number): string => `${Math.floor(t / 60)}:${String(Math.floor(t % 60)).padStart(2, '0')}`;

/** The latest sample at or before `t` seconds (the first one for times before it). */
function at(samples: Sample[], t: number): Sample | undefined {
  let found: Sample | undefined = samples[0];
  for (const s of samples) if (s.t <= t + 1e-6) found = s;
  return found;
}

/** Rate of `field` of `app` between two times, per second. */
function rate(samples: Sample[], app: AppKey, field: 'sent' | 'received', from: number, to: number): number {
  const a = at(samples, from)?.apps[app];
  const b = at(samples, to)?.apps[app];
  const sa = at(samples, from);
  const sb = at(samples, to);
  if (!a || !b || !sa || !sb || sb.t <= sa.t) return NaN;
  return (b[field] - a[field]) / (sb.t - sa.t);
}

export function markdown(r: Result): string {
  const keys = Object.keys(r.apps) as AppKey[];
  const L: string[] = [];
  const minutes = r.durationS / 60;
  L.push(`# Soak run ${r.date.replace('T', ' ').slice(0, 19)} UTC — ${minutes.toFixed(minutes < 1 ? 2 : 1)} min of load`, '');
  const dup = keys.reduce((a, k) => a + (r.apps[k]?.counters.dup ?? 0), 0);
  if (r.passed) {
    L.push(`**PASS** — nothing lost where the README promises it, no client disconnected; ${dup} duplicate deliveries (allowed after a BusinessWorker kill: at least once).`);
  } else {
    L.push(`**FAIL**${r.aborted ? ` (aborted: ${r.aborted})` : ''}:`, '', ...r.problems.map((p) => `- ${p}`));
  }
  L.push('');
  for (const k of keys) L.push(`- **${k}** (${r.apps[k]!.template}): ${r.apps[k]!.load}`);
  const reloadEvery = r.options.periodS as number;
  L.push(
    `- every app: \`start.ts reload\` every ${reloadEvery} s, a BusinessWorker SIGKILLed halfway between two reloads; ` +
      `${keys.reduce((a, k) => a + r.apps[k]!.clients, 0)} client connections in all; sampled every ${r.options.sampleS} s`,
    `- machine: ${r.machine.cpus} CPUs, load average ${r.machine.loadavgStart.map((x) => x.toFixed(1)).join(' ')} at the start, ${r.machine.loadavgEnd.map((x) => x.toFixed(1)).join(' ')} at the end; Node ${r.machine.node}${r.machine.soakCpuPct === undefined ? '' : `; the soak's own process (clients, checks, sampling) used ${r.machine.soakCpuPct.toFixed(0)}% of a core`}`,
    ...r.machine.notes.map((n) => `- note: ${n}`),
    '',
  );

  L.push('## Result', '');
  L.push('| app | sent | deliveries owed | received | lost | dup | disconnects | errors | reloads | kills | RSS start → end (MB) | of it gateways (MB) | stop |');
  L.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const k of keys) {
    const a = r.apps[k]!;
    const c = a.counters;
    L.push(
      `| ${k} | ${n0(c.sent)} | ${n0(c.expected)} | ${n0(c.received)} | ${a.lost === undefined ? 'n/a' : n0(a.lost)} | ${n0(c.dup)} | ${c.disconnects} | ${c.errors} | ${a.reloads} | ${a.kills} | ${mb(a.rssStartKb)} → ${mb(a.rssEndKb)} | ${mb(a.gatewayStartKb)} → ${mb(a.gatewayEndKb)} | ${a.stop} |`,
    );
  }
  L.push('', 'sent: chat `say`s, game inputs, MQTT QoS 1 publishes. received: every delivery (chat: a say at each room member; game: `state` messages; MQTT: a publish at each subscriber), duplicates included. lost = owed − distinct deliveries, after a drain. Game: no deliveries are owed (inputs sent while a room is frozen are dropped by design); what is checked is that every player stays connected and its last input is acknowledged at the end.', '');

  L.push('## Throughput per minute', '');
  const head = keys.flatMap((k) => [`${k} ${UNITS[k].sent}`, `${k} ${UNITS[k].received}`]);
  L.push(`| minute | ${head.join(' | ')} |`, `|---|${head.map(() => '---|').join('')}`);
  // The load phase only (the drain after it sends nothing): up to the sample taken as it ended.
  const loadSamples = r.samples.filter((s) => s.t <= r.durationS + 1);
  const end = loadSamples.length > 0 ? loadSamples[loadSamples.length - 1].t : 0;
  for (let m = 0; m * 60 < end - 0.5; m++) {
    const from = m * 60;
    const to = Math.min(end, (m + 1) * 60);
    const cells = keys.flatMap((k) => [r0(rate(r.samples, k, 'sent', from, to)), r0(rate(r.samples, k, 'received', from, to))]);
    L.push(`| ${m + 1}${to - from < 59 ? ` (${Math.round(to - from)} s)` : ''} | ${cells.join(' | ')} |`);
  }
  L.push('');

  L.push('## RSS over time', '');
  L.push('Resident memory of every process of each app (master, register, store, gateways, workers, tsx\'s esbuild), and of its gateways alone, in MB.', '');
  const rssHead = keys.flatMap((k) => [`${k} all`, `${k} gateways`, `${k} workers`]);
  L.push(`| time | ${rssHead.join(' | ')} |`, `|---|${rssHead.map(() => '---|').join('')}`);
  const lastT = r.samples.length > 0 ? r.samples[r.samples.length - 1].t : 0;
  const times = [0];
  for (let t = 60; t < lastT; t += 60) times.push(t);
  if (lastT > 0) times.push(lastT);
  for (const t of times) {
    const s = at(r.samples, t);
    if (!s) continue;
    const cells = keys.flatMap((k) => {
      const a = s.apps[k];
      return a ? [mb(a.totalKb), mb(a.gatewayKb), mb(a.workerKb)] : ['–', '–', '–'];
    });
    L.push(`| ${clock(s.t)} | ${cells.join(' | ')} |`);
  }
  L.push('');

  L.push('## Reloads and kills', '');
  L.push('| at | app | action | ok | took | detail | client errors | game freeze after it |', '|---|---|---|---|---|---|---|---|');
  r.actions.forEach((a, i) => {
    const f = r.freezes.filter((x) => x.action === i);
    const freeze = a.app === 'game' ? (f.length > 0 ? `${secs(Math.max(...f.map((x) => x.ms)))} (${Math.max(...f.map((x) => x.rooms))} rooms)` : 'none over 1 s') : '';
    const errors = a.clientErrors ? `**${a.clientErrors}**` : String(a.clientErrors ?? '–');
    L.push(`| ${clock(a.at / 1000)} | ${a.app} | ${a.kind} | ${a.ok ? 'yes' : '**no**'} | ${secs(a.ms)} | ${a.detail} | ${errors} | ${freeze} |`);
  });
  L.push(
    '',
    'took: reload — until `start.ts reload` returned (every BusinessWorker replaced and ready); kill — until the restarted worker linked to every gateway again. client errors: error replies (and warnings) the app\'s clients got from its start until 5 s after it ended.',
    '',
  );
  const stray = keys.map((k) => [k, Number(r.apps[k]!.details.errorsNotAfterAnAction ?? 0)] as const).filter(([, n]) => n > 0);
  if (stray.length > 0) L.push(`Client errors not after a reload or kill: ${stray.map(([k, n]) => `${k} ${n}`).join(', ')}.`, '');
  const firstErrors = keys.filter((k) => r.apps[k]!.counters.errors > 0);
  for (const k of firstErrors) {
    const list = (r.apps[k]!.details.errors as string[] | undefined) ?? [];
    L.push(`First error replies of ${k} (UTC time, client, reply):`, '', ...list.slice(0, 5).map((e) => `    ${e}`), '');
  }
  const loose = r.freezes.filter((f) => f.action === -1);
  if (r.apps.game) {
    const g = r.apps.game.details;
    L.push(`Game: longest gap between two \`state\`s of a player: ${secs(Number(g.maxGapMs ?? 0))}; gaps over ${secs(Number(g.freezeMs ?? 0))}: ${loose.length === 0 ? 'only after reloads and kills' : `${loose.length} not after a reload or kill (${loose.slice(0, 5).map((f) => `${clock(f.t)} ${secs(f.ms)}`).join(', ')})`}.`, '');
  }

  L.push('## App logs', '');
  L.push('Warning and error lines each app logged, by role and message (full logs: `logs/<app>.log` beside this report):', '');
  const list = (logs: Record<string, number>): string => {
    const entries = Object.entries(logs);
    return entries.length === 0 ? 'none' : entries.map(([m, c]) => `\`${m}\` ×${c}`).join('; ');
  };
  for (const k of keys) {
    const { run, stop } = r.apps[k]!.logs;
    L.push(`- ${k}, while running: ${list(run)}`, `- ${k}, while stopping: ${list(stop)}`);
  }
  L.push('');
  if (r.leftovers.length > 0) L.push(`**Processes left running after the stop:** ${r.leftovers.join(', ')}`, '');
  return L.join('\n');
}

export function chart(r: Result): string {
  const keys = Object.keys(r.apps) as AppKey[];
  const throughput: Series[] = [];
  const memory: Series[] = [];
  for (const k of keys) {
    const pts: Array<[number, number]> = [];
    for (let i = 1; i < r.samples.length; i++) {
      const a = r.samples[i - 1];
      const b = r.samples[i];
      const x = a.apps[k];
      const y = b.apps[k];
      if (x && y && b.t > a.t) pts.push([b.t, (y.received - x.received) / (b.t - a.t)]);
    }
    throughput.push({ label: `${k} ${UNITS[k].received}`, color: COLORS[k], points: pts });
    memory.push({ label: `${k} all processes`, color: COLORS[k], points: r.samples.filter((s) => s.apps[k]).map((s) => [s.t, s.apps[k]!.totalKb / 1024]) });
    memory.push({ label: `${k} gateways`, color: COLORS[k], dashed: true, points: r.samples.filter((s) => s.apps[k]).map((s) => [s.t, s.apps[k]!.gatewayKb / 1024]) });
  }
  const markers: Marker[] = r.actions.map((a) => ({
    t: a.at / 1000,
    label: a.kind === 'reload' ? 'R' : 'K',
    color: COLORS[a.app],
    title: `${a.app} ${a.kind} at ${clock(a.at / 1000)}: ${a.detail}`,
  }));
  return lineChart({
    title: `gatewayworker soak ${r.date.slice(0, 16).replace('T', ' ')} — ${r.passed ? 'PASS' : 'FAIL'}`,
    subtitle: 'R = start.ts reload, K = a BusinessWorker SIGKILLed (colour: app)',
    duration: r.samples.length > 0 ? r.samples[r.samples.length - 1].t : r.durationS,
    panels: [
      { title: 'Messages received per second (per sample interval)', series: throughput },
      { title: 'RSS, MB (solid: every process of the app; dashed: its gateways)', series: memory },
    ],
    markers,
  });
}
