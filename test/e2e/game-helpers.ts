/**
 * Helpers of the game room end-to-end test. Generating, running and stopping the app, ports and
 * temporary folders come from ./helpers.ts (shared with the chat test); what is specific to the
 * game room is here: generating the game-room template, the app with its gateway port and a
 * per-process timer count, and players (on the shared JSON socket) that answer the heartbeat.
 */
import { join } from 'node:path';
import type { Test } from 'tap';
import { ensureRuntimeBuilt, freePort, generator, jsonSocket, startApp, waitFor, type JsonSocket, type Message, type RunningApp } from './helpers.ts';

export { sleep, tempDir, waitFor, type Message, type Run, type StatusJson } from './helpers.ts';

/** `create-gatewayworker-app <name> --template game-room --yes` in `cwd` (installs from the npm cache). */
export async function generateGameApp(cwd: string, name = 'game'): Promise<string> {
  await ensureRuntimeBuilt();
  const r = await generator([name, '--template', 'game-room', '--yes'], cwd);
  if (r.code !== 0) throw new Error(`the generator failed (${r.code}):\n${r.stdout}${r.stderr}`);
  return join(cwd, name);
}

// ---- the running app -------------------------------------------------------------------------

export interface GameApp extends RunningApp {
  /** The gateway's WebSocket port. */
  port: number;
  /** Live timers (`Timer`) of one process, from `status --json`. */
  timersOf(pid: number): Promise<number>;
}

/**
 * `startApp` (./helpers.ts) on free ports: the generated app in a process group of its own,
 * resolved at "Start success", stopped at the end of `t` whatever happened.
 */
export async function startGameApp(t: Test, dir: string, env: NodeJS.ProcessEnv = {}): Promise<GameApp> {
  const port = await freePort();
  const app = await startApp(t, dir, {
    GATEWAY_PORT: String(port),
    REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`,
    START_PORT: String(await freePort(8)),
    ...env,
  });
  // "Start success" means every process is up, not that every worker has linked to every
  // gateway yet: wait for those links so that routing starts from the full picture.
  if (env.GATEWAY_COUNT && env.WORKER_COUNT) {
    const links = Number(env.GATEWAY_COUNT) * Number(env.WORKER_COUNT);
    await waitFor(() => (app.output().match(/business worker linked/g) ?? []).length >= links, 10_000, `${links} worker links`);
  }
  return Object.assign(app, {
    port,
    async timersOf(pid: number) {
      const row = (await app.status()).processes.find((p) => p.pid === pid);
      if (!row) throw new Error(`pid ${pid} is not in status`);
      return row.timers;
    },
  });
}

// ---- players ---------------------------------------------------------------------------------

export interface Player extends JsonSocket {
  /** Every message received so far, in order (pings left out). */
  all: Message[];
  /** join (or resume) and wait for `joined`; the joined message is returned. */
  join(name: string, room?: string): Promise<Message>;
  /** Asks for a pong and returns the pid of the worker that answered. */
  pid(): Promise<number>;
}

/** A WebSocket player on the app's gateway; it answers the gateway's heartbeat like the page. */
export async function player(t: Test, port: number): Promise<Player> {
  const all: Message[] = [];
  const socket = await jsonSocket(t, port, {
    onMessage: (m, ws) => {
      if (m.type === 'ping') {
        ws.send('{"type":"pong"}');
        return false;
      }
      all.push(m);
      return true;
    },
    showQueue: (queue) => queue.filter((m) => m.type !== 'state').slice(-10),
  });
  const p: Player = {
    ...socket,
    all,
    async join(name, room) {
      p.send(room === undefined ? { type: 'join', name } : { type: 'join', name, room });
      return p.next((m) => m.type === 'joined' || m.type === 'error');
    },
    async pid() {
      const t0 = Math.random();
      p.send({ type: 'ping', t: t0 });
      return (await p.next((m) => m.type === 'pong' && m.t === t0)).pid;
    },
  };
  return p;
}
