import type { IncomingMessage, ServerResponse } from 'node:http';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import type { WebSocket } from 'ws';
import {
  ErrorCode,
  StreamTransport,
  WebSocketAcceptor,
  WebSocketTransport,
  type Protocol,
} from '../protocols/index.js';
import { formatListen, parseAddress, type ListenSpec, type ParsedAddress } from './address.js';
import {
  Connection,
  DEFAULT_LIMITS,
  type ConnectionEvents,
  type ConnectionLimits,
  type ConnectionOwner,
} from './Connection.js';
import { HandoverAgent } from './handover/agent.js';
import { TransferError, TransferErrorCode } from './handover/errors.js';
import { wsSupport } from './handover/wsReceiver.js';
import { IpLimiter } from './ipLimit.js';
import { CHILD_ENV, isMasterMessage, type ChildMessage, type ConnectionInfo, type MasterMessage, type ProcessStatus } from './ipc.js';
import { describeError, log, setRole } from './log.js';
import { processStats } from './stats.js';
import { Timer } from './Timer.js';

/** What `onMessage` receives for an address: strings for text, Buffers for binary schemes. */
export type MessageOf<A extends string> = A extends `text://${string}`
  ? string
  : A extends `frame://${string}` | `tcp://${string}` | `unix://${string}` | `ssl://${string}`
    ? Buffer
    : A extends `websocket://${string}` | `ws://${string}` | `wss://${string}`
      ? string | Buffer
      : unknown;

/** Refusal of a WebSocket handshake returned by `onWebSocketConnect`. */
export interface WebSocketRejection {
  /** HTTP status, e.g. 401 or 403. */
  status: number;
  message?: string;
}

/** Callbacks of a Worker: process life plus the events of each of its connections. */
export interface WorkerEvents<M = unknown> extends ConnectionEvents<M> {
  /** The process starts; connections are accepted once this settles. */
  onWorkerStart?: (worker: Worker) => unknown;
  /** `reload` reached this process (before it stops, if it is reloadable). */
  onWorkerReload?: (worker: Worker) => unknown;
  /** The process stops; it has stopped accepting and still has its connections. */
  onWorkerStop?: (worker: Worker) => unknown;
  /**
   * A WebSocket upgrade request arrived (after `onConnect`). Return `false` or a
   * {@link WebSocketRejection} to refuse it (403 by default); may be async.
   */
  onWebSocketConnect?: (
    conn: Connection<M>,
    request: IncomingMessage,
  ) => void | boolean | WebSocketRejection | Promise<void | boolean | WebSocketRejection>;
  /** A plain HTTP request on a WebSocket port (serve a page beside the socket). Default: 426. */
  onHttpRequest?: (request: IncomingMessage, response: ServerResponse) => unknown;
}

/** Options of a {@link Worker}; callbacks can be given here or assigned as properties later. */
export interface WorkerOptions<M = unknown> extends Partial<ConnectionLimits>, WorkerEvents<M> {
  /** Shown by status, logs and process titles. Default `none`. */
  name?: string;
  /** Number of processes. Default 1. */
  count?: number;
  /**
   * Bind one socket per process with SO_REUSEPORT where Node supports it (22.12+); on Node 20
   * the processes share one listening socket, which behaves the same for clients.
   */
  reusePort?: boolean;
  /** `ssl` wraps the protocol in TLS (needs `tls`). `wss://` and `ssl://` imply it. */
  transport?: 'tcp' | 'ssl';
  /** Certificate and key for TLS (any `tls.SecureContextOptions`). */
  tls?: tls.SecureContextOptions;
  /** Framing protocol for `tcp://`, `ssl://` and `unix://` addresses (a registered name or an implementation). */
  protocol?: string | Protocol;
  /** Whether `reload` restarts this worker's processes. Default true. */
  reloadable?: boolean;
  /**
   * Seconds a new connection has to finish its TLS or WebSocket handshake; a peer that connects
   * and then stalls (slowloris) is closed when it runs out. Each phase has its own budget, so a
   * `wss://` client gets this for TLS and again for the WebSocket upgrade. Default 10.
   */
  handshakeTimeout?: number;
  /**
   * Most connections one remote IP address may hold open in each process of this Worker, counted
   * from accept (so connections still in their TLS or WebSocket handshake count too). One more from
   * that address is refused at once: the socket is destroyed before any handshake or callback
   * (no `onConnect`), {@link Worker.refusedConnections} counts it, and the log gets one `warn`
   * line per address per 10 seconds however many are refused. IPv4-mapped IPv6 addresses count as
   * their IPv4 address; unix sockets are not limited. Connections moved in from a sibling process
   * are not counted. Processes count separately: with `count` processes an address can hold up to
   * `count` times this many in all. A positive integer; default: no limit.
   */
  maxConnectionsPerIp?: number;
  /** Listen backlog. Default 1024. */
  backlog?: number;
  /** TCP keep-alive probe delay in seconds, to find peers that vanished; 0 disables. Default 60. */
  keepAlive?: number;
  /**
   * Hand WebSocket text messages to `onMessage` as UTF-8 Buffers (validated by ws) instead of
   * strings, with `binary` false: saves a decode when the bytes are only passed on. Default false.
   */
  textAsBuffer?: boolean;
  /** Offer permessage-deflate on WebSocket addresses. Default false (costs CPU and memory; such connections cannot move). */
  perMessageDeflate?: boolean;
}

const HANDLE_NAMES = [
  'onWorkerStart',
  'onWorkerReload',
  'onWorkerStop',
  'onConnect',
  'onMessage',
  'onClose',
  'onError',
  'onBufferFull',
  'onBufferDrain',
  'onTransfer',
  'onTimer',
  'onWebSocketConnect',
  'onHttpRequest',
] as const;

/**
 * A group of `count` processes that listen on one address and share its callbacks — Workerman's
 * `Worker`. Define every Worker in the start file, then call {@link Worker.runAll}: the master
 * supervises the processes, and in each process the Worker accepts connections.
 *
 * ```ts
 * const worker = new Worker('websocket://0.0.0.0:8080', { name: 'Echo', count: 2 });
 * worker.onMessage = (conn, data) => conn.send(data);
 * Worker.runAll();
 * ```
 */
export class Worker<A extends string = string> implements ConnectionOwner, WorkerEvents<MessageOf<A>> {
  /** Every Worker defined before `runAll`, in definition order (the master supervises these). */
  static readonly all: Worker[] = [];
  /** Pid file of the master; default under the runtime directory (see README). */
  static pidFile?: string;
  /** Log file used in daemon mode. */
  static logFile?: string;
  /** Seconds a non-graceful stop waits before killing a process. Default 2. */
  static stopTimeout = 2;
  /**
   * Seconds a starting process has to report ready before `start` and `reload` move on without it
   * (it is still supervised and may come up later). Default 30, or `GATEWAYWORKER_READY_TIMEOUT`.
   */
  static readyTimeout = Number(process.env.GATEWAYWORKER_READY_TIMEOUT) || 30;
  /** The Worker this process runs (in a child), or null in the master. */
  static current: Worker | null = null;

  /** Position in {@link Worker.all}; -1 for workers created inside a running process. */
  readonly index: number;
  /** The address as given, or null for a Worker that listens on nothing. */
  readonly address: string | null;
  name: string;
  count: number;
  reloadable: boolean;
  /** This process's id within the Worker, 0…count-1; the same after a restart. */
  id = 0;
  /** Live connections of this process by id. */
  readonly connections = new Map<number, Connection<MessageOf<A>>>();
  readonly options: Readonly<WorkerOptions<MessageOf<A>>>;

  onWorkerStart?: WorkerEvents<MessageOf<A>>['onWorkerStart'];
  onWorkerReload?: WorkerEvents<MessageOf<A>>['onWorkerReload'];
  onWorkerStop?: WorkerEvents<MessageOf<A>>['onWorkerStop'];
  onConnect?: WorkerEvents<MessageOf<A>>['onConnect'];
  onMessage?: WorkerEvents<MessageOf<A>>['onMessage'];
  onClose?: WorkerEvents<MessageOf<A>>['onClose'];
  onError?: WorkerEvents<MessageOf<A>>['onError'];
  onBufferFull?: WorkerEvents<MessageOf<A>>['onBufferFull'];
  onBufferDrain?: WorkerEvents<MessageOf<A>>['onBufferDrain'];
  onTransfer?: WorkerEvents<MessageOf<A>>['onTransfer'];
  onTimer?: WorkerEvents<MessageOf<A>>['onTimer'];
  onWebSocketConnect?: WorkerEvents<MessageOf<A>>['onWebSocketConnect'];
  onHttpRequest?: WorkerEvents<MessageOf<A>>['onHttpRequest'];

  private readonly parsed: ParsedAddress | null;
  private readonly limits: ConnectionLimits;
  private server: net.Server | null = null;
  private acceptor: WebSocketAcceptor | null = null;
  private secureContext: tls.SecureContext | null = null;
  /** Connections still in their WebSocket handshake, by socket. */
  private readonly handshaking = new WeakMap<net.Socket, Connection<MessageOf<A>>>();
  private boundPort = 0;
  private stopping: Promise<void> | null = null;
  /** Moves connections to and from sibling processes (in a child of a master only). */
  private handover: HandoverAgent | null = null;
  /** Open connections per remote address, when `maxConnectionsPerIp` is set. */
  private readonly ipLimiter: IpLimiter | null;

  /**
   * @param address `tcp://`, `text://`, `frame://`, `websocket://` (`ws://`), `wss://`, `ssl://`,
   * `unix:///path`, or a scheme registered with `registerProtocol`; omit for a Worker that only runs code.
   */
  constructor(address?: A | null, options: WorkerOptions<MessageOf<A>> = {}) {
    this.address = address ?? null;
    this.options = options;
    this.parsed = address ? parseAddress(address, options.protocol) : null;
    this.name = options.name ?? 'none';
    this.count = options.count ?? 1;
    if (!Number.isInteger(this.count) || this.count < 1) throw new RangeError(`worker "${this.name}": count must be a positive integer, got ${options.count}`);
    this.reloadable = options.reloadable ?? true;
    this.limits = {
      maxPackageSize: options.maxPackageSize ?? DEFAULT_LIMITS.maxPackageSize,
      maxSendBufferSize: options.maxSendBufferSize ?? DEFAULT_LIMITS.maxSendBufferSize,
    };
    for (const key of HANDLE_NAMES) {
      if (options[key]) (this as Record<string, unknown>)[key] = options[key];
    }
    const secure = (this.parsed?.tls ?? false) || options.transport === 'ssl';
    if (secure && !options.tls) throw new TypeError(`worker "${this.name}": ${address} needs TLS options (tls: { cert, key })`);
    if (secure && options.tls) this.secureContext = tls.createSecureContext(options.tls);
    const self = this;
    this.ipLimiter =
      options.maxConnectionsPerIp === undefined
        ? null
        : new IpLimiter(options.maxConnectionsPerIp, {
            // Read when a line is logged: the name may be changed after construction.
            get worker() {
              return self.name;
            },
          });
    if (Worker.current === null) {
      this.index = Worker.all.length;
      Worker.all.push(this as Worker);
    } else {
      this.index = -1;
    }
  }

  /** Where the master binds this Worker's socket, or null. @internal */
  get listenSpec(): ListenSpec | null {
    if (!this.parsed) return null;
    return { ...this.parsed.endpoint, backlog: this.options.backlog ?? 1024 };
  }

  /** The address with the port actually bound (useful with port 0). */
  get listening(): string {
    if (!this.parsed) return 'none';
    return formatListen(this.parsed.scheme, this.parsed.endpoint, this.boundPort || undefined);
  }

  /** Connections this process refused at accept because of `maxConnectionsPerIp`. */
  get refusedConnections(): number {
    return this.ipLimiter?.refused ?? 0;
  }

  /** How this Worker frames client data: ws messages, or a byte-stream protocol (null = raw). @internal */
  get framing(): { family: 'stream' | 'websocket' | null; protocol: Protocol | null } {
    return { family: this.parsed?.family ?? null, protocol: this.parsed?.protocol ?? null };
  }

  /** @internal ConnectionOwner */
  get textAsBuffer(): boolean {
    return this.options.textAsBuffer ?? false;
  }

  /** @internal ConnectionOwner */
  get events(): ConnectionEvents<never, never> {
    return this as unknown as ConnectionEvents<never, never>;
  }

  /** @internal ConnectionOwner */
  forget(conn: Connection<never>): void {
    this.connections.delete(conn.id);
  }

  /** @internal ConnectionOwner: see {@link Connection.transferTo}. */
  transfer(conn: Connection<never>, target: number, context: unknown): Promise<void> {
    if (!this.handover) {
      return Promise.reject(new TransferError(TransferErrorCode.NOT_SUPPORTED, `worker "${this.name}" is not running under a master: connections can only move between its processes`));
    }
    if (this.stopping) return Promise.reject(new TransferError(TransferErrorCode.NOT_ESTABLISHED, 'this process is stopping'));
    return this.handover.transfer(conn, target, context);
  }

  /** Starts the handover agent of this child process and returns it. @internal */
  enableHandover(onMasterLost: () => void): HandoverAgent {
    this.handover ??= new HandoverAgent({
      index: this.index,
      id: this.id,
      count: this.count,
      framing: this.framing,
      maxPackageSize: this.limits.maxPackageSize,
      newConnection: () => new Connection<MessageOf<A>>(this, this.limits) as unknown as Connection<never>,
      track: (conn) => void this.track(conn as unknown as Connection<MessageOf<A>>),
    }, onMasterLost);
    if (this.parsed?.family === 'websocket' && this.count > 1) {
      // Feature detection of ws's internals, once, off the start-up path.
      setImmediate(() => {
        const why = wsSupport();
        if (why) log.warn('websocket connections of this worker cannot move', { worker: this.name, reason: why });
      });
    }
    return this.handover;
  }

  /**
   * Starts listening in this process, outside the master's supervision (Workerman's
   * `$worker->listen()`): for sockets a process opens for itself, such as a gateway's internal port.
   * @returns the address actually bound.
   */
  async listen(): Promise<string> {
    if (!this.parsed) throw new Error(`worker "${this.name}" has no address to listen on`);
    const endpoint = this.parsed.endpoint;
    const server = this.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if (endpoint.kind === 'unix') server.listen({ path: endpoint.path, backlog: this.options.backlog ?? 1024 }, done);
      else server.listen({ host: endpoint.host, port: endpoint.port, backlog: this.options.backlog ?? 1024 }, done);
    });
    return this.listening;
  }

  /** Stops accepting and closes this Worker's connections in this process (for {@link listen}ed workers). */
  async close(): Promise<void> {
    this.server?.close();
    this.acceptor?.closePending();
    await this.closeConnections(1000);
  }

  /**
   * Runs every Worker defined so far. In the process started from the command line this is the
   * CLI and the master (`start`, `stop`, `restart`, `reload`, `status`, `connections`); in a child
   * process it runs that child's Worker.
   */
  static async runAll(): Promise<void> {
    const child = process.env[CHILD_ENV];
    if (child) {
      await runChild(child);
      return;
    }
    const { runMaster } = await import('./master/index.js');
    await runMaster(Worker.all, {
      pidFile: Worker.pidFile,
      logFile: Worker.logFile,
      stopTimeout: Worker.stopTimeout,
      readyTimeout: Worker.readyTimeout,
    });
  }

  /** Starts serving in a child on the handle the master shares. @internal */
  async serve(handle: net.Server | object | undefined): Promise<void> {
    if (this.parsed && !handle) throw new Error(`worker "${this.name}" got no listening socket from the master`);
    const server = this.parsed ? this.createServer() : null;
    await this.emitWorker('onWorkerStart');
    if (!server || !handle) return;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(handle as net.Server, this.options.backlog ?? 1024, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  /**
   * Stops this process: no new connections, `onWorkerStop`, then either closes every connection
   * (non-graceful) or waits until clients have left by themselves (graceful). @internal
   */
  stop(graceful: boolean, progress?: (connections: number) => void): Promise<void> {
    this.stopping ??= (async () => {
      this.server?.close();
      this.acceptor?.closePending();
      await this.emitWorker('onWorkerStop');
      if (graceful) {
        while (this.connections.size > 0) {
          progress?.(this.connections.size);
          await waitForConnections(this.connections, 1000);
        }
      } else {
        await this.closeConnections(Math.max(200, Worker.stopTimeout * 1000 - 500));
      }
    })();
    return this.stopping;
  }

  /** Status row of this process. @internal */
  status(sampler: LoadSampler): ProcessStatus {
    return {
      pid: process.pid,
      name: this.name,
      id: this.id,
      listening: this.listening,
      memory: process.memoryUsage.rss(),
      connections: this.connections.size,
      sendFail: processStats.sendFail,
      timers: Timer.count(),
      totalRequest: processStats.totalRequest,
      qps: sampler.qps,
      eventLoop: sampler.eventLoop,
      startedAt: sampler.startedAt,
    };
  }

  private createServer(): net.Server {
    const server = net.createServer({ noDelay: true, pauseOnConnect: false }, (socket) => this.accept(socket));
    server.on('listening', () => {
      const address = server.address();
      if (address && typeof address === 'object') this.boundPort = address.port;
    });
    server.on('error', (error) => log.error('listening socket error', { worker: this.name, error: describeError(error) }));
    this.server = server;
    if (this.parsed?.family === 'websocket') this.acceptor = this.createAcceptor();
    return server;
  }

  private accept(rawSocket: net.Socket): void {
    // A reset before our handlers are attached must not become an uncaught 'error'.
    rawSocket.on('error', () => {});
    if (this.ipLimiter && !this.ipLimiter.admit(rawSocket)) return;
    const keepAlive = this.options.keepAlive ?? 60;
    if (keepAlive > 0 && rawSocket.remoteAddress !== undefined) rawSocket.setKeepAlive(true, keepAlive * 1000);
    if (!this.secureContext) {
      this.admit(rawSocket, this.parsed?.endpoint.kind === 'unix' ? 'unix' : 'tcp');
      return;
    }
    const socket = new tls.TLSSocket(rawSocket, { isServer: true, secureContext: this.secureContext });
    let secured = false;
    socket.on('error', (error) => {
      if (!secured) log.debug('TLS handshake failed', { worker: this.name, remote: rawSocket.remoteAddress, error: error.message });
    });
    const timer = setTimeout(() => socket.destroy(), this.handshakeTimeoutMs());
    socket.once('secure', () => {
      secured = true;
      clearTimeout(timer);
      this.admit(socket, 'ssl');
    });
    socket.once('close', () => clearTimeout(timer));
  }

  /** A socket past TCP/TLS setup enters its protocol. */
  private admit(socket: net.Socket, kind: 'tcp' | 'ssl' | 'unix'): void {
    if (this.acceptor) {
      this.acceptor.accept(socket);
      return;
    }
    const conn = this.track(new Connection<MessageOf<A>>(this, this.limits));
    conn.attach(new StreamTransport(socket, conn, { protocol: this.parsed?.protocol ?? null, maxPackageSize: this.limits.maxPackageSize, kind }));
    this.emitConnect(conn);
  }

  private track(conn: Connection<MessageOf<A>>): Connection<MessageOf<A>> {
    this.connections.set(conn.id, conn);
    return conn;
  }

  private emitConnect(conn: Connection<MessageOf<A>>): void {
    conn.announce();
  }

  private createAcceptor(): WebSocketAcceptor {
    const kind: 'tcp' | 'ssl' | 'unix' = this.secureContext ? 'ssl' : this.parsed?.endpoint.kind === 'unix' ? 'unix' : 'tcp';
    return new WebSocketAcceptor(
      {
        verify: async (request, socket) => {
          const conn = this.track(new Connection<MessageOf<A>>(this, this.limits));
          conn.adoptAddresses(socket);
          this.handshaking.set(socket, conn);
          // If the handshake is refused or the peer leaves mid-way, the app still sees a close.
          socket.once('close', () => {
            if (!conn.attached) conn.onTransportClose();
          });
          this.emitConnect(conn);
          if (conn.status !== 'connecting') return { status: 403, message: 'Forbidden' };
          let verdict: Awaited<ReturnType<NonNullable<WorkerEvents['onWebSocketConnect']>>>;
          try {
            verdict = this.onWebSocketConnect ? await this.onWebSocketConnect(conn, request) : true;
          } catch (error) {
            log.error('onWebSocketConnect threw', { worker: this.name, conn: conn.id, error: describeError(error) });
            return { status: 500, message: 'Internal Server Error' };
          }
          if (conn.status !== 'connecting' || verdict === false) return { status: 403, message: 'Forbidden' };
          if (verdict && typeof verdict === 'object') return { status: verdict.status, message: verdict.message ?? 'Forbidden' };
          return true;
        },
        open: (ws: WebSocket, _request, socket) => {
          const conn = this.handshaking.get(socket);
          if (!conn) {
            ws.terminate();
            return;
          }
          this.handshaking.delete(socket);
          conn.attach(new WebSocketTransport(ws, socket, conn, kind));
        },
        httpRequest: this.onHttpRequest ? (request, response) => this.callHttp(request, response) : undefined,
        handshakeError: (socket, _request, status, reason) => {
          const conn = this.handshaking.get(socket);
          if (conn) conn.onTransportError(ErrorCode.HANDSHAKE_FAILED, `websocket handshake refused (${status}): ${reason}`);
          else log.debug(`websocket handshake refused (${status}): ${reason}`, { worker: this.name, remote: socket.remoteAddress });
        },
      },
      {
        // MQTT over WebSocket: the MQTT layer enforces the packet limit (and tells v5 clients, 0x95);
        // a message may also carry several packets.
        maxPayload: this.framing.protocol?.name === 'mqtt' ? this.limits.maxPackageSize * 2 + 1024 : this.limits.maxPackageSize,
        handshakeTimeout: this.handshakeTimeoutMs(),
        perMessageDeflate: this.options.perMessageDeflate ?? false,
      },
    );
  }

  private callHttp(request: IncomingMessage, response: ServerResponse): void {
    try {
      const result = this.onHttpRequest?.(request, response);
      if (result instanceof Promise) result.catch((error: unknown) => this.httpFailed(response, error));
    } catch (error) {
      this.httpFailed(response, error);
    }
  }

  private httpFailed(response: ServerResponse, error: unknown): void {
    log.error('onHttpRequest threw', { worker: this.name, error: describeError(error) });
    if (!response.headersSent) response.writeHead(500, { 'Content-Type': 'text/plain' });
    response.end('500 Internal Server Error\n');
  }

  private handshakeTimeoutMs(): number {
    return (this.options.handshakeTimeout ?? 10) * 1000;
  }

  private async emitWorker(name: 'onWorkerStart' | 'onWorkerReload' | 'onWorkerStop'): Promise<void> {
    const handler = this[name];
    if (!handler) return;
    try {
      await handler(this as Worker);
    } catch (error) {
      log.error(`${name} threw`, { worker: this.name, error: describeError(error) });
    }
  }

  /** Runs `onWorkerReload`. @internal */
  reloadHook(): Promise<void> {
    return this.emitWorker('onWorkerReload');
  }

  private async closeConnections(timeoutMs: number): Promise<void> {
    for (const conn of this.connections.values()) conn.close();
    await waitForConnections(this.connections, timeoutMs);
    for (const conn of this.connections.values()) conn.destroy();
  }
}

/** Resolves when `connections` is empty or after `timeoutMs`. */
function waitForConnections(connections: Map<number, unknown>, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const started = Date.now();
    const check = (): void => {
      if (connections.size === 0 || Date.now() - started >= timeoutMs) resolve();
      else setTimeout(check, 20);
    };
    check();
  });
}

/** Messages per second and event-loop load over the last full second. */
class LoadSampler {
  qps = 0;
  eventLoop = 0;
  readonly startedAt = Date.now();
  private lastRequests = 0;
  private lastElu = performance.eventLoopUtilization();

  start(): void {
    setInterval(() => {
      this.qps = processStats.totalRequest - this.lastRequests;
      this.lastRequests = processStats.totalRequest;
      const now = performance.eventLoopUtilization();
      this.eventLoop = performance.eventLoopUtilization(now, this.lastElu).utilization;
      this.lastElu = now;
    }, 1000).unref();
  }
}

/** The life of a child process: wait for the master's socket, serve, answer status, stop. */
async function runChild(spec: string): Promise<void> {
  const [indexText, idText] = spec.split(':');
  const worker = Worker.all[Number(indexText)];
  if (!worker) {
    log.error(`child ${spec}: the start file defined no worker #${indexText}; it must define the same workers in every process`);
    process.exit(1);
  }
  worker.id = Number(idText);
  Worker.current = worker;
  setRole(`${worker.name}#${worker.id}`);
  process.title = `gatewayworker: ${worker.name}#${worker.id} ${worker.address ?? ''}`.trim();
  const sampler = new LoadSampler();
  sampler.start();

  const send = (message: ChildMessage): void => {
    if (process.connected) process.send?.(message);
  };
  const handover = worker.enableHandover(() => {
    log.warn('master gone during a connection move; stopping');
    void exit(false);
  });
  const exit = async (graceful: boolean): Promise<void> => {
    // Moves not yet released stay here (and are closed with the rest); offers are dropped.
    handover.masterGone();
    await worker.stop(graceful, (connections) => send({ gw: 'stopping', pid: process.pid, connections }));
    Timer.delAll();
    process.exit(0);
  };

  // Ctrl+C reaches the whole process group; the master decides how children stop.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => void exit(false));
  process.on('disconnect', () => void exit(false));
  // Belt and braces: IPC can miss a 'disconnect' (a handle send pending when the master died);
  // a child whose parent changed is an orphan and must not keep serving.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid === parent) return;
    setTimeout(() => process.exit(1), Worker.stopTimeout * 1000).unref();
    void exit(false);
  }, 1000).unref();
  process.on('uncaughtException', (error) => log.error('uncaught exception', { error: describeError(error) }));
  process.on('unhandledRejection', (error) => log.error('unhandled rejection', { error: describeError(error) }));

  process.on('message', (message: unknown, handle: unknown) => {
    if (!isMasterMessage(message)) return;
    if ((message as MasterMessage).gw === 'handover') {
      handover.onMessage(message as Extract<MasterMessage, { gw: 'handover' }>, handle);
      return;
    }
    handleMasterMessage(worker, message as MasterMessage, handle, sampler, send, exit);
  });
}

function handleMasterMessage(
  worker: Worker,
  message: MasterMessage,
  handle: unknown,
  sampler: LoadSampler,
  send: (message: ChildMessage) => void,
  exit: (graceful: boolean) => Promise<void>,
): void {
  switch (message.gw) {
    case 'listen':
      worker
        .serve(message.handle ? (handle as object) : undefined)
        .then(() => send({ gw: 'ready', pid: process.pid, listening: worker.listening }))
        .catch((error: unknown) => {
          log.error('could not start', { error: describeError(error) });
          process.exit(1);
        });
      break;
    case 'stop':
      void exit(message.graceful);
      break;
    case 'reload':
      void worker.reloadHook().then(() => (worker.reloadable ? exit(message.graceful) : undefined));
      break;
    case 'status':
      send({ gw: 'status', req: message.req, data: worker.status(sampler) });
      break;
    case 'connections': {
      const data: ConnectionInfo[] = [];
      for (const conn of worker.connections.values()) data.push(conn.info(process.pid));
      send({ gw: 'connections', req: message.req, data });
      break;
    }
    case 'handover':
      break;
  }
}
