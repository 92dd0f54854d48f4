/** Text rendering for the CLI: the start banner, `status` and `connections`. */
import type { ConnectionInfo } from '../ipc.js';
import type { StatusReport } from './types.js';

const WIDTH = 96;

/** `----- TITLE -----` centred in the banner width. */
export function rule(title = ''): string {
  if (!title) return '-'.repeat(WIDTH);
  const side = Math.max(2, WIDTH - title.length - 2);
  const left = Math.floor(side / 2);
  return `${'-'.repeat(left)} ${title} ${'-'.repeat(side - left)}`;
}

/** Left-aligned columns, two spaces apart. */
export function table(headers: string[], rows: string[][]): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ');
  return [line(headers), ...rows.map(line)];
}

/** One banner row per worker. */
export interface BannerRow {
  name: string;
  listen: string;
  processes: number;
  ready: number;
}

/** The start banner (Workerman's layout). */
export function banner(opts: { version: string; pid: number; rows: BannerRow[]; daemon: boolean }): string {
  const ok = opts.rows.every((r) => r.ready === r.processes);
  const lines = [
    rule('gatewayworker'),
    `gatewayworker/${opts.version}  Node/${process.version}  master pid ${opts.pid}`,
    rule('WORKERS'),
    ...table(
      ['worker', 'listen', 'processes', 'status'],
      opts.rows.map((r) => [r.name, r.listen, String(r.processes), r.ready === r.processes ? '[OK]' : `[FAIL ${r.ready}/${r.processes}]`]),
    ),
    rule(),
    ok ? (opts.daemon ? 'Start success.' : 'Start success. Press Ctrl+C to stop.') : 'Start finished with processes that did not report ready.',
  ];
  return lines.join('\n');
}

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 86400)} days ${Math.floor((s % 86400) / 3600)} hours ${Math.floor((s % 3600) / 60)} minutes ${s % 60} seconds`;
}

const mb = (bytes: number): string => `${(bytes / 1048576).toFixed(1)}M`;

/** The `status` screen. */
export function statusText(report: StatusReport, now = Date.now()): string {
  const m = report.master;
  const exitRows = Object.entries(m.exits).flatMap(([name, byStatus]) =>
    Object.entries(byStatus).map(([status, count]) => [name, status, String(count)]),
  );
  const processRows = report.processes.map((p) =>
    p.status === 'idle'
      ? [String(p.pid), mb(p.memory), p.listening, `${p.name}#${p.id}`, String(p.connections), String(p.sendFail),
        String(p.timers), String(p.totalRequest), String(p.qps), `${Math.round(p.eventLoop * 100)}%`, 'idle']
      : [String(p.pid), '-', p.listening, `${p.name}#${p.id}`, '-', '-', '-', '-', '-', '-', 'busy'],
  );
  return [
    rule('GLOBAL STATUS'),
    `gatewayworker version: ${m.version}    Node version: ${m.node}    master pid: ${m.pid}`,
    `start time: ${new Date(m.startedAt).toISOString()}    run ${duration(now - m.startedAt)}`,
    `load average: ${m.loadavg.map((n) => n.toFixed(2)).join(', ')}    ${m.workers} workers    ${m.processes} processes`,
    ...table(['worker_name', 'exit_status', 'exit_count'], exitRows),
    rule('PROCESS STATUS'),
    ...table(
      ['pid', 'memory', 'listening', 'worker_name', 'connections', 'send_fail', 'timers', 'total_request', 'qps', 'event_loop', 'status'],
      processRows,
    ),
    rule(),
  ].join('\n');
}

/** The `connections` table. */
export function connectionsText(rows: ConnectionInfo[]): string {
  return [
    ...table(
      ['pid', 'worker', 'id', 'protocol', 'transport', 'remote', 'local', 'bytes_in', 'bytes_out', 'send_buffer', 'status'],
      rows.map((c) => [String(c.pid), c.worker, String(c.id), c.protocol, c.transport, c.remoteAddress, c.localAddress,
        String(c.bytesRead), String(c.bytesWritten), String(c.sendBuffer), c.status]),
    ),
    `${rows.length} connections`,
  ].join('\n');
}
