/**
 * A bounded soak of the three templates: `npm run soak -- [--minutes N]` (see soak/README.md).
 *
 * Generates the chat, game-room and mqtt-hub apps into a temp dir, starts each on free ports,
 * drives steady traffic that checks every delivery, reloads each app and SIGKILLs one of its
 * BusinessWorkers in turn, samples throughput and memory, then stops everything it started (also
 * on Ctrl+C and on errors) and writes a report: markdown on stdout and in <out>/latest.md,
 * <out>/<date>.json, <out>/latest.svg. Exit code 1 when something the README promises did not
 * hold (a delivery lost, a client disconnected, a game room that did not come back, a reload or
 * restart that failed); duplicates after a worker kill are counted, never failed (at least once).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  APP_KEYS,
  Scope,
  TEMPLATES,
  appEnv,
  generate,
  hubDevice,
  killWorker,
  logSummary,
  memory,
  processes,
  reload,
  runtimeStaleness,
  startSoakApp,
  tempDirToRemove,
  type Action,
  type AppKey,
  type SoakApp,
} from './apps.ts';
import { ChatLoad } from './loads/chat.ts';
import { GameLoad } from './loads/game.ts';
import { MqttLoad } from './loads/mqtt.ts';
import { sleep, type Load } from './loads/types.ts';
import { chart, markdown, type AppResult, type GameFreeze, type Result, type Sample } from './report.ts';

const HERE = fileURLToPath(new URL('.', import.meta.url));

const USAGE = `Usage: npm run soak -- [options]
  --minutes <n>     minutes of load (default 10; fractions allowed, e.g. 0.5)
  --period <s>      seconds between two reloads of an app (the first at 3/4 of it); a BusinessWorker
                    is SIGKILLed halfway between two, the first at 1/4 (default 60, or the run's
                    length if shorter)
  --sample <s>      seconds between two samples (default 5)
  --drain <s>       seconds to wait at the end for what is still in flight (default 30)
  --scale <f>       client counts × f (default 1: 60 chat + 24 game + 42 MQTT connections)
  --only <apps>     comma-separated subset of chat,game,mqtt
  --out <dir>       where results go (default soak/results)
  --no-install      do not npm install the generated apps: link the repo's node_modules instead
  --keep            keep the generated apps (temp dir) afterwards
  -h, --help`;

interface Options {
  minutes: number;
  periodS: number;
  sampleS: number;
  drainS: number;
  scale: number;
  only: AppKey[];
  out: string;
  install: boolean;
  keep: boolean;
}

function options(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      minutes: { type: 'string' },
      period: { type: 'string' },
      sample: { type: 'string' },
      drain: { type: 'string' },
      scale: { type: 'string' },
      only: { type: 'string' },
      out: { type: 'string' },
      'no-install': { type: 'boolean' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    process.exit(0);
  }
  const num = (v: string | undefined, fallback: number, name: string): number => {
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${v}`);
    return n;
  };
  const minutes = num(values.minutes, 10, 'minutes');
  const only = values.only === undefined ? APP_KEYS : (values.only.split(',').map((s) => s.trim()) as AppKey[]);
  for (const k of only) if (!APP_KEYS.includes(k)) throw new Error(`--only: unknown app ${k} (chat, game, mqtt)`);
  return {
    minutes,
    // A run shorter than a period still gets a kill (at P/4) and a reload (at 3P/4) per app.
    periodS: num(values.period, Math.min(60, Math.max(10, Math.round(minutes * 60))), 'period'),
    sampleS: num(values.sample, 5, 'sample'),
    drainS: num(values.drain, 30, 'drain'),
    scale: num(values.scale, 1, 'scale'),
    only,
    out: resolve(values.out ?? join(HERE, 'results')),
    install: !values['no-install'],
    keep: Boolean(values.keep),
  };
}

/** A pid that runs (a zombie waiting for its parent counts as gone). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = options(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`soak: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const keys = opts.only;
  const durationMs = opts.minutes * 60_000;
  const P = opts.periodS;
  const scale = opts.scale;
  const chatRooms = Math.max(1, Math.round(6 * scale));
  const gamePlayers = 4 * Math.max(1, Math.round(6 * scale));
  const mqttPublishers = Math.max(2, Math.round(40 * scale));
  const tickRate = 10;

  const date = new Date().toISOString();
  const stamp = date.slice(0, 19).replace(/:/g, '-');
  const tag = Math.random().toString(36).slice(2, 7);
  const t00 = Date.now();
  const log = (line: string): void => void process.stderr.write(`[soak ${String(Math.round((Date.now() - t00) / 1000)).padStart(4)} s] ${line}\n`);

  const scope = new Scope();
  const problems: string[] = [];
  const notes: string[] = [];
  let aborted: string | undefined;
  let exitCode = 0;
  let wake!: () => void;
  const abortPromise = new Promise<void>((resolve) => (wake = resolve));
  const abort = (why: string): void => {
    if (aborted) return;
    aborted = why;
    wake();
  };
  const pause = (ms: number): Promise<void> => Promise.race([sleep(Math.max(0, ms)), abortPromise]);

  // Ctrl+C (SIGINT, SIGTERM): stop the load, stop the apps (start.ts stop), write the report of
  // what ran. The same signal may arrive more than once at first (from the terminal and relayed
  // by npm; the e2e helpers re-raise it); one more than 3 s later exits at once.
  let firstSignal = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (firstSignal === 0) {
      firstSignal = Date.now();
      log(`${signal}: stopping everything (again to exit at once)`);
      abort(signal);
    } else if (Date.now() - firstSignal > 3000) {
      process.exit(130); // the exit hook SIGKILLs every app group
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const stale = runtimeStaleness();
  if (stale) notes.push(stale);
  const loadavgStart = os.loadavg();
  const apps: Partial<Record<AppKey, SoakApp>> = {};
  const loads: Partial<Record<AppKey, Load>> = {};
  const loadText: Partial<Record<AppKey, string>> = {};
  const samples: Sample[] = [];
  const actions: Action[] = [];
  const stopInfo: Partial<Record<AppKey, string>> = {};
  let leftovers: number[] = [];
  let loadStart = 0;
  let loadEnd = 0;
  let sampler: NodeJS.Timeout | undefined;
  let workDir = '';
  /** The soak process's own CPU over the load phase. */
  let cpuAtStart: NodeJS.CpuUsage | undefined;
  let soakCpuPct: number | undefined;
  const deadApps = new Set<AppKey>();

  const takeSample = (): void => {
    const s: Sample = { t: (Date.now() - loadStart) / 1000, apps: {} };
    for (const k of keys) {
      const load = loads[k];
      const sa = apps[k];
      if (!load || !sa) continue;
      s.apps[k] = { ...load.counters(), ...memory(sa) };
      if ((sa.app.proc.exitCode !== null || sa.app.proc.signalCode !== null) && !deadApps.has(k)) {
        deadApps.add(k);
        problems.push(`${k}: the master exited during the run (${sa.app.proc.exitCode ?? sa.app.proc.signalCode})`);
        abort(`${k} master exited`);
      }
    }
    samples.push(s);
  };

  const progress = (): void => {
    const s = samples[samples.length - 1];
    if (!s) return;
    const parts = keys.map((k) => {
      const a = s.apps[k];
      if (!a) return `${k} –`;
      const pending = a.expected !== undefined ? ` pending ${a.expected - (a.delivered ?? 0)}` : '';
      return `${k} sent ${a.sent} recv ${a.received}${pending} dup ${a.dup} rss ${Math.round(a.totalKb / 1024)} MB`;
    });
    log(parts.join(' | '));
  };

  /**
   * Kill at P/4, reload at 3P/4, kill at 5P/4, … (apps a few seconds apart) until the load ends:
   * a reload every P seconds and a kill between two. The kill comes first because it is quick,
   * while a reload on a busy machine can take half a minute: a short run still gets both.
   */
  const runActions = async (k: AppKey, index: number): Promise<void> => {
    const sa = apps[k]!;
    const offset = index * Math.min(3, P / 20);
    let kills = 0;
    for (let n = 0; ; n++) {
      const t = offset + P / 4 + (n * P) / 2;
      if (t * 1000 > durationMs - 3000) return;
      await pause(loadStart + t * 1000 - Date.now());
      if (aborted || Date.now() - loadStart > durationMs) return;
      const kind = n % 2 === 0 ? 'kill' : 'reload';
      const at = Date.now() - loadStart;
      log(`${k}: ${kind === 'reload' ? 'start.ts reload' : 'SIGKILL a BusinessWorker'}`);
      const r = kind === 'reload' ? await reload(sa) : await killWorker(sa, kills++);
      actions.push({ kind, app: k, at, ...r });
      log(`${k}: ${kind} ${r.ok ? 'done' : 'FAILED'}${r.ms === null ? '' : ` in ${(r.ms / 1000).toFixed(1)} s`}: ${r.detail}`);
      if (!r.ok && !aborted) problems.push(`${k}: ${kind} at ${Math.round(at / 1000)} s failed: ${r.detail}`);
    }
  };

  try {
    workDir = mkdtempSync(join(os.tmpdir(), 'gw-soak-'));
    // Removed after the report is written (with installed node_modules that takes a while).
    if (opts.keep) log(`keeping ${workDir}`);
    else tempDirToRemove(workDir);

    log(`generating ${keys.map((k) => TEMPLATES[k]).join(', ')} into ${workDir} (${opts.install ? 'npm install' : "node_modules linked to the repo's"})`);
    const projects = await Promise.all(keys.map((k) => generate(k, workDir, opts.install)));
    if (aborted) throw new Error(`aborted (${aborted})`);

    await Promise.all(
      keys.map(async (k, i) => {
        const dataDir = join(workDir, `${k}-data`);
        mkdirSync(dataDir, { recursive: true });
        const makeEnv = (): Promise<Record<string, string>> => appEnv(k, dataDir, { tickRate });
        const device = k === 'mqtt' ? await hubDevice(projects[i], await makeEnv(), 'soak') : undefined;
        const failed = (attempt: number, output: string): void => {
          mkdirSync(join(opts.out, 'logs'), { recursive: true });
          writeFileSync(join(opts.out, 'logs', `${k}-failed-start-${attempt}.log`), output);
          notes.push(`${k}: start attempt ${attempt} failed (its output: logs/${k}-failed-start-${attempt}.log)`);
        };
        const sa = await startSoakApp(scope, k, projects[i], makeEnv, log, failed);
        sa.device = device;
        apps[k] = sa;
        log(`${k}: up (master pid ${sa.app.pid}, ${processes(sa).length} processes, ${Object.entries(sa.env).filter(([n]) => /PORT|ADDRESS/.test(n)).map(([n, v]) => `${n}=${v}`).join(' ')})`);
      }),
    );
    if (aborted) throw new Error(`aborted (${aborted})`);

    for (const k of keys) {
      const env = apps[k]!.env;
      if (k === 'chat') {
        loads.chat = new ChatLoad({ port: Number(env.GATEWAY_PORT), rooms: chatRooms, perRoom: 10, intervalMs: 3000, tag });
        loadText.chat = `${chatRooms} rooms × 10 clients, each says something to its room every 3 s (±30%); every say checked at every room member`;
      } else if (k === 'game') {
        loads.game = new GameLoad({ port: Number(env.GATEWAY_PORT), players: gamePlayers, inputIntervalMs: 250, freezeMs: 1000 });
        loadText.game = `${gamePlayers} players joined by matchmaking (rooms of 4), an input every 250 ms each, TICK_RATE ${tickRate}; gaps between states over 1 s measured`;
      } else {
        const device = apps.mqtt!.device!;
        loads.mqtt = new MqttLoad({
          tcpUrl: `mqtt://127.0.0.1:${env.MQTT_PORT}`,
          wsUrl: `ws://127.0.0.1:${env.WS_PORT}/mqtt`,
          username: device.id,
          password: device.password,
          publishers: mqttPublishers,
          subscribers: 2,
          intervalMs: 1000,
          topicRoot: `devices/${device.id}/t`,
          tag,
        });
        loadText.mqtt = `${mqttPublishers} publishers (half TCP, half WebSocket) as device \`${device.id}\` (npm run device:add), QoS 1, one publish a second each after the previous PUBACK; 2 QoS 1 subscribers (TCP, WebSocket) on \`devices/${device.id}/t/#\``;
      }
    }
    log(`connecting ${keys.map((k) => `${loads[k]!.clients} ${k}`).join(', ')} clients`);
    await Promise.all(keys.map((k) => loads[k]!.connect()));
    if (aborted) throw new Error(`aborted (${aborted})`);

    log(`load for ${opts.minutes} min; reload every ${P} s, a BusinessWorker kill halfway between`);
    loadStart = Date.now();
    cpuAtStart = process.cpuUsage();
    for (const k of keys) loads[k]!.start();
    takeSample();
    let tick = 0;
    sampler = setInterval(() => {
      takeSample();
      if (++tick % Math.max(1, Math.round(30 / opts.sampleS)) === 0) progress();
    }, opts.sampleS * 1000);
    const runners = keys.map((k, i) => runActions(k, i));
    await pause(loadStart + durationMs - Date.now());
    loadEnd = Date.now();
    const cpu = process.cpuUsage(cpuAtStart);
    soakCpuPct = (100 * (cpu.user + cpu.system)) / 1000 / Math.max(1, loadEnd - loadStart);
    for (const k of keys) loads[k]!.stopSending();
    takeSample();
    if (!aborted) {
      log('load stopped; waiting for reloads/kills still running, then draining');
      await Promise.all(runners);
      const drained = await Promise.all(keys.map((k) => loads[k]!.drain(opts.drainS * 1000)));
      keys.forEach((k, i) => !drained[i] && log(`${k}: not everything arrived within the ${opts.drainS} s drain`));
    }
    clearInterval(sampler);
    takeSample();
    progress();
    for (const k of keys) problems.push(...loads[k]!.problems());
  } catch (error) {
    const message = (error as Error).message;
    if (!aborted) {
      problems.push(`run error: ${message.split('\n').slice(0, 6).join(' / ')}`);
      log(`error: ${(error as Error).stack ?? message}`);
      abort('error');
      exitCode = 2;
    }
  } finally {
    if (sampler) clearInterval(sampler);
    for (const k of keys) await loads[k]?.close().catch(() => {});
    // Stop each app the way a user does, and see whether its master exits by itself.
    const pids: number[] = [];
    await Promise.all(
      keys.map(async (k) => {
        const sa = apps[k];
        if (!sa) return;
        pids.push(...processes(sa).map((p) => p.pid));
        if (sa.app.proc.exitCode !== null || sa.app.proc.signalCode !== null) {
          stopInfo[k] = `already exited (${sa.app.proc.exitCode ?? sa.app.proc.signalCode})`;
          return;
        }
        const t0 = Date.now();
        await sa.app.cli('stop');
        const exit = await Promise.race([sa.app.exited, sleep(30_000).then(() => 'timeout')]);
        stopInfo[k] = exit === 0 ? `clean, ${((Date.now() - t0) / 1000).toFixed(1)} s` : `**${exit === 'timeout' ? 'master still running after 30 s' : `exit ${exit}`}**`;
        if (exit !== 0 && !aborted) problems.push(`${k}: start.ts stop did not end the master cleanly (${exit})`);
      }),
    );
    mkdirSync(join(opts.out, 'logs'), { recursive: true });
    for (const k of keys) if (apps[k]) writeFileSync(join(opts.out, 'logs', `${k}.log`), apps[k]!.app.output());
    await scope.close(); // the helpers' teardowns: stop, SIGKILL the group, remove dirs
    await sleep(300);
    leftovers = pids.filter(running);
    if (leftovers.length > 0) problems.push(`processes left running after the stop: ${leftovers.join(', ')}`);
  }

  // ---- the report ----------------------------------------------------------------------------
  actions.sort((a, b) => a.at - b.at);
  /**
   * The reload/kill of `app` an event at `t` (s since the load started) follows: the latest one
   * that started before it (1 s slack) and had not been over for more than 5 s; -1 for none.
   */
  const actionOf = (app: AppKey, t: number): number => {
    let owner = -1;
    actions.forEach((a, i) => {
      if (a.app === app && a.at / 1000 <= t + 1 && t <= (a.at + (a.ms ?? 60_000)) / 1000 + 5) owner = i;
    });
    return owner;
  };
  const strayErrors: Partial<Record<AppKey, number>> = {};
  if (loadStart > 0) {
    for (const a of actions) a.clientErrors = 0;
    for (const k of keys) {
      for (const at of loads[k]?.errorTimes() ?? []) {
        const i = actionOf(k, (at - loadStart) / 1000);
        if (i === -1) strayErrors[k] = (strayErrors[k] ?? 0) + 1;
        else actions[i].clientErrors!++;
      }
    }
  }
  const freezes: GameFreeze[] = [];
  const game = loads.game as GameLoad | undefined;
  if (game && loadStart > 0) {
    // Each freeze belongs to the reload/kill it follows; the rest are listed on their own, in clusters.
    const list = game.freezeList().map((f) => ({ ...f, t: (f.from - loadStart) / 1000 }));
    const byAction = new Map<number, typeof list>();
    const rest: typeof list = [];
    for (const f of list) {
      const owner = actionOf('game', f.t);
      if (owner === -1) rest.push(f);
      else byAction.set(owner, [...(byAction.get(owner) ?? []), f]);
    }
    for (const [i, mine] of byAction) {
      freezes.push({ action: i, t: Math.min(...mine.map((f) => f.t)), ms: Math.max(...mine.map((f) => f.ms)), rooms: new Set(mine.map((f) => f.room)).size, players: new Set(mine.map((f) => f.player)).size });
    }
    rest.sort((a, b) => a.t - b.t);
    for (const f of rest) {
      const last = freezes[freezes.length - 1];
      if (last && last.action === -1 && f.t - last.t < 2) {
        last.ms = Math.max(last.ms, f.ms);
        last.players++;
      } else freezes.push({ action: -1, t: f.t, ms: f.ms, rooms: 1, players: 1 });
    }
    freezes.sort((a, b) => a.t - b.t);
  }

  const first = samples[0];
  const last = samples[samples.length - 1];
  const appResults: Partial<Record<AppKey, AppResult>> = {};
  for (const k of keys) {
    const load = loads[k];
    const sa = apps[k];
    if (!load || !sa) continue;
    const counters = load.counters();
    appResults[k] = {
      template: TEMPLATES[k],
      clients: load.clients,
      load: loadText[k] ?? '',
      counters,
      lost: counters.expected === undefined ? undefined : counters.expected - (counters.delivered ?? 0),
      reloads: actions.filter((a) => a.app === k && a.kind === 'reload').length,
      kills: actions.filter((a) => a.app === k && a.kind === 'kill').length,
      rssStartKb: first?.apps[k]?.totalKb ?? 0,
      rssEndKb: last?.apps[k]?.totalKb ?? 0,
      gatewayStartKb: first?.apps[k]?.gatewayKb ?? 0,
      gatewayEndKb: last?.apps[k]?.gatewayKb ?? 0,
      stop: stopInfo[k] ?? '–',
      details: { ...load.details(), errorsNotAfterAnAction: strayErrors[k] ?? 0 },
      logs: logSummary(sa),
    };
  }
  if (aborted && !problems.some((p) => p.startsWith('run error'))) problems.unshift(`aborted: ${aborted}`);
  const result: Result = {
    date,
    passed: problems.length === 0 && !aborted,
    aborted,
    options: { minutes: opts.minutes, periodS: P, sampleS: opts.sampleS, drainS: opts.drainS, scale, install: opts.install, only: keys, tickRate },
    machine: { cpus: os.cpus().length, loadavgStart, loadavgEnd: os.loadavg(), node: process.version, soakCpuPct, notes },
    durationS: loadStart === 0 ? 0 : ((loadEnd || Date.now()) - loadStart) / 1000,
    apps: appResults,
    samples,
    actions,
    freezes,
    problems,
    leftovers,
  };
  const md = markdown(result);
  mkdirSync(opts.out, { recursive: true });
  writeFileSync(join(opts.out, `${stamp}.json`), JSON.stringify(result, null, 1) + '\n');
  writeFileSync(join(opts.out, 'latest.md'), md + '\n');
  writeFileSync(join(opts.out, 'latest.svg'), chart(result) + '\n');
  process.stdout.write(md + '\n');
  log(`wrote ${join(opts.out, `${stamp}.json`)}, latest.md, latest.svg, logs/`);
  if (workDir && !opts.keep) {
    log(`removing ${workDir}`);
    rmSync(workDir, { recursive: true, force: true });
  }
  if (exitCode !== 0) return exitCode;
  if (aborted === 'SIGINT' || aborted === 'SIGTERM') return 130;
  return result.passed ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`soak: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(2);
  },
);
