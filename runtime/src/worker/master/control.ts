/**
 * The control channel: a unix socket next to the pid file. A CLI invocation connects, writes one
 * JSON line (a command) and reads JSON lines back: progress, then one result or error.
 */
import fs from 'node:fs';
import net from 'node:net';
import type { ConnectionInfo } from '../ipc.js';
import { log } from './log.js';
import type { ReloadStep, StopStep } from './Supervisor.js';
import type { StatusReport } from './types.js';

export type ControlCommand =
  | { cmd: 'status' }
  | { cmd: 'connections' }
  | { cmd: 'stop'; graceful: boolean }
  | { cmd: 'reload'; graceful: boolean };

export type ControlProgress = { event: 'reloaded'; step: ReloadStep } | { event: 'stopping'; step: StopStep };

export type ControlReply =
  | { type: 'progress'; progress: ControlProgress }
  | { type: 'result'; data: unknown }
  | { type: 'error'; message: string };

/** What the running master does for each command. */
export interface ControlHandlers {
  status(): Promise<StatusReport>;
  connections(): Promise<ConnectionInfo[]>;
  reload(graceful: boolean, progress: (p: ControlProgress) => void): Promise<ReloadStep[]>;
  stop(graceful: boolean, progress: (p: ControlProgress) => void): Promise<void>;
}

function parseCommand(line: string): ControlCommand | null {
  try {
    const value = JSON.parse(line) as { cmd?: unknown; graceful?: unknown };
    const graceful = value.graceful === true;
    switch (value.cmd) {
      case 'status':
      case 'connections':
        return { cmd: value.cmd };
      case 'stop':
      case 'reload':
        return { cmd: value.cmd, graceful };
      default:
        return null;
    }
  } catch {
    return null;
  }
}

function run(command: ControlCommand, handlers: ControlHandlers, progress: (p: ControlProgress) => void): Promise<unknown> {
  switch (command.cmd) {
    case 'status':
      return handlers.status();
    case 'connections':
      return handlers.connections();
    case 'reload':
      return handlers.reload(command.graceful, progress);
    case 'stop':
      return handlers.stop(command.graceful, progress);
  }
}

function serveConnection(socket: net.Socket, handlers: ControlHandlers): void {
  let buffer = '';
  let started = false;
  const write = (reply: ControlReply): void => {
    if (!socket.destroyed) socket.write(JSON.stringify(reply) + '\n');
  };
  socket.on('error', () => socket.destroy());
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    if (started) return;
    buffer += chunk;
    const newline = buffer.indexOf('\n');
    if (newline === -1) {
      if (buffer.length > 4096) socket.destroy();
      return;
    }
    started = true;
    const command = parseCommand(buffer.slice(0, newline));
    if (!command) {
      write({ type: 'error', message: 'bad command' });
      socket.end();
      return;
    }
    run(command, handlers, (progress) => write({ type: 'progress', progress })).then(
      (data) => write({ type: 'result', data: data ?? null }),
      (err: Error) => write({ type: 'error', message: err.message }),
    ).finally(() => socket.end());
  });
}

/**
 * Listen on `path` (replacing a stale socket file: the caller owns the pid file).
 * @returns the server; `server.close()` removes the socket file.
 */
export function serveControl(path: string, handlers: ControlHandlers): Promise<net.Server> {
  fs.rmSync(path, { force: true });
  const server = net.createServer((socket) => serveConnection(socket, handlers));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      server.on('error', (err) => log.error('control socket error', { error: err.message }));
      resolve(server);
    });
  });
}

/** The master could not be reached on its control socket. */
export class ControlUnavailableError extends Error {
  readonly code: string;
  constructor(code: string) {
    super(`control socket unavailable (${code})`);
    this.code = code;
  }
}

/**
 * Send one command and collect the replies.
 * @throws ControlUnavailableError when nothing listens on `path`; Error when the master answers with an error.
 */
export function sendCommand(path: string, command: ControlCommand, onProgress?: (p: ControlProgress) => void): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    let buffer = '';
    let settled = false;
    let connected = false;
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      fn();
    };
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      connected = true;
      socket.write(JSON.stringify(command) + '\n');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      settle(() => reject(connected ? err : new ControlUnavailableError(err.code ?? 'ERROR')));
    });
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf('\n')) !== -1) {
        const reply = JSON.parse(buffer.slice(0, newline)) as ControlReply;
        buffer = buffer.slice(newline + 1);
        if (reply.type === 'progress') onProgress?.(reply.progress);
        else if (reply.type === 'result') settle(() => resolve(reply.data));
        else settle(() => reject(new Error(reply.message)));
      }
    });
    socket.on('close', () => settle(() => reject(new Error('control connection closed without a result'))));
  });
}
