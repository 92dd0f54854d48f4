import type { IncomingMessage, ServerResponse } from 'node:http';
import type { IPublishPacket } from 'mqtt-packet';
import { clientIdPrefix, gatewayKey, makeClientId, splitHostPort } from '../internal/clientId.js';
import {
  Cmd,
  PayloadFlag,
  Target,
  decodeBroadcast,
  decodeJson,
  decodePublish,
  decodeRequest,
  decodeSend,
  decodeU32,
  encodeJson,
  encodeRequest,
  encodeMqttDeliveryState,
  payloadOf,
  type PublishFrame,
  type UnackedMessage,
} from '../internal/codec.js';
import { DEFAULT_LINK_BUFFER, LINK_MAX_PACKAGE, acceptLink, dialLink, type DialedLink, type Link } from '../internal/link.js';
import { encodeFrame } from '../protocols/index.js';
import type { Connection, SendResult } from '../worker/Connection.js';
import { describeError, log } from '../worker/log.js';
import { Timer } from '../worker/Timer.js';
import { Worker, type WorkerOptions } from '../worker/Worker.js';
import { ClientTable, deepMerge, type Client } from './clients.js';
import { GatewayQueries } from './queries.js';
import { MqttLayer, MqttReason, MqttSession } from './mqtt.js';
import { encodeMqttPacket } from '../protocols/mqtt.js';
import { ErrorCode } from '../protocols/errors.js';
import { staticFiles } from './static.js';
import { Subscriptions } from './subscriptions.js';
import { WorkerPool, type Router } from './WorkerPool.js';

/** Options of a {@link Gateway}. */
export interface GatewayOptions
  extends Pick<WorkerOptions, 'name' | 'count' | 'transport' | 'tls' | 'protocol' | 'maxPackageSize' | 'handshakeTimeout' | 'backlog' | 'reusePort' | 'keepAlive' | 'maxConnectionsPerIp'> {
  /** Address workers reach this gateway on; must be an IP of this host. Default 127.0.0.1. */
  lanIp?: string;
  /** Internal port of process 0; process n listens on startPort + n. Default 2900. */
  startPort?: number;
  /** Register address(es), `host:port`. Default 127.0.0.1:1236. */
  registerAddress?: string | string[];
  /** Seconds between heartbeat checks; 0 turns the heartbeat off. Default 0. */
  pingInterval?: number;
  /**
   * A client silent for `pingInterval × pingNotResponseLimit` seconds is closed at the next check,
   * i.e. after between that and one more `pingInterval`. 0 never closes silent clients.
   */
  pingNotResponseLimit?: number;
  /** Sent to each client that was silent during the last `pingInterval`. */
  pingData?: string | Buffer;
  /** Places client events on BusinessWorkers; default sticky per client, fewest clients first. */
  router?: Router;
  /** Shared secret of the internal links. Default: empty. */
  secretKey?: string;
  /** Bytes queued per worker link before frames are dropped. Default 64 MB. */
  sendToWorkerBufferSize?: number;
  /** Bytes queued per client before sends are dropped. Default 1 MB. */
  sendToClientBufferSize?: number;
  /**
   * What happens to a client that does not read fast enough, once `sendToClientBufferSize` bytes
   * wait for it: `drop` (default) drops further messages until its buffer drains; `close` closes
   * the connection (workers get `onClose`), so a client never silently misses messages.
   */
  slowClientPolicy?: 'drop' | 'close';
  /** Client events kept while no worker is up. Default 100,000. */
  holdLimit?: number;
  /** Seconds a client event waits for a worker before it is dropped with a log line. Default 30. */
  holdTimeout?: number;
  /** Serve this directory over HTTP on a WebSocket port (a browser client beside its socket). */
  staticDir?: string | URL;
  /**
   * Answers plain HTTP requests on a WebSocket port (an API beside the socket). Return true (or a
   * promise of true) when it answered; otherwise `staticDir` (or a 404) answers.
   */
  httpHandler?: (request: IncomingMessage, response: ServerResponse) => boolean | Promise<boolean>;
  /** MQTT: seconds a new connection has to send its CONNECT. Default 10. */
  mqttConnectTimeout?: number;
  /** Called in the gateway when a client connects (no business code here: logging, metrics). */
  onConnect?: (conn: Connection) => unknown;
  /** Called in the gateway when a client leaves. */
  onClose?: (conn: Connection) => unknown;
}

const EMPTY = Buffer.alloc(0);
/** Largest client package a gateway accepts: one internal frame with room for the session. */
const MAX_CLIENT_PACKAGE = LINK_MAX_PACKAGE - 4 * 1024 * 1024;

/**
 * Holds client connections and does network I/O only: it forwards client events to
 * BusinessWorkers and carries out what they ask (sends, groups, uids, sessions). Each process
 * listens on `lanIp:startPort+id` for workers and announces itself to the Register.
 * Gateways are never reloaded, so clients stay connected while workers reload.
 */
export class Gateway extends Worker {
  readonly lanIp: string;
  readonly startPort: number;
  readonly clients = new ClientTable();
  private readonly settings: GatewayOptions;
  private readonly registerAddresses: string[];
  private epoch = 0;
  private idPrefix = '';
  private internalKey = '';
  private pool: WorkerPool | null = null;
  private readonly apiLinks = new Set<Link>();
  private readonly linkHandlers = new Map<number, { onMessage(data: Buffer): void; onClose(): void }>();
  private registers: DialedLink[] = [];
  private internal: Worker | null = null;
  private readonly queries = new GatewayQueries(this.clients, () => this.idPrefix);
  private readonly corked = new Set<Connection>();
  private readonly subscriptions = new Subscriptions<Client>();
  /** Set when clients speak MQTT (`mqtt://`, `mqtts://`, `mqtt+ws://`). */
  private mqtt: MqttLayer<Client> | null = null;

  /** @param address client-facing address, e.g. `websocket://0.0.0.0:7272` or `text://0.0.0.0:8282`. */
  constructor(address: string, options: GatewayOptions = {}) {
    super(address, {
      ...options,
      name: options.name ?? 'Gateway',
      reloadable: false,
      // Client text is passed on as bytes: no decode here, no re-encode for the worker link.
      textAsBuffer: true,
      maxSendBufferSize: options.sendToClientBufferSize,
      onHttpRequest: httpHandlerOf(options),
    });
    this.settings = options;
    this.lanIp = options.lanIp ?? '127.0.0.1';
    this.startPort = options.startPort ?? 2900;
    const registers = options.registerAddress ?? '127.0.0.1:1236';
    this.registerAddresses = Array.isArray(registers) ? registers : [registers];
    for (const register of this.registerAddresses) splitHostPort(register);
    if (this.limitsPackageSize() > MAX_CLIENT_PACKAGE) {
      throw new RangeError(`Gateway maxPackageSize ${this.limitsPackageSize()} is over ${MAX_CLIENT_PACKAGE} bytes: a client package must fit in one internal link frame with its session`);
    }
    this.onWorkerStart = () => this.startInternal();
    this.onWorkerStop = () => this.stopInternal();
    this.onConnect = (conn) => this.clientConnected(conn);
    this.onWebSocketConnect = (conn, request) => this.clientUpgraded(conn, request);
    this.onMessage = (conn, data, binary) => this.clientMessage(conn, data, binary);
    this.onClose = (conn) => this.clientClosed(conn);
    this.onError = (conn, code, message) => this.clientError(conn, code, message);
    if (options.slowClientPolicy === 'close') this.onBufferFull = (conn) => this.closeSlowClient(conn);
  }

  /** `slowClientPolicy: 'close'`: a client whose send buffer filled up is closed. */
  private closeSlowClient(conn: Connection): void {
    log.info('client not reading: send buffer full, closing it', { client: this.clients.get(conn.id)?.id ?? conn.id, buffered: conn.sendBufferSize });
    if (this.corked.delete(conn)) conn.uncork();
    conn.destroy();
  }

  /** A transport error (the connection is being dropped): an MQTT 5 client whose packet was too large is told why first. */
  private clientError(conn: Connection, code: ErrorCode, message: string): void {
    const session = this.clients.get(conn.id)?.mqtt;
    if (code === ErrorCode.PACKAGE_TOO_LARGE && session?.version === 5) {
      if (this.corked.delete(conn)) conn.uncork();
      conn.send(encodeMqttPacket({ cmd: 'disconnect', reasonCode: MqttReason.PACKET_TOO_LARGE }, 5), true);
    }
    // Resets, timeouts and full buffers are ordinary on the Internet; bad input deserves a line.
    const fields = { client: this.clients.get(conn.id)?.id ?? conn.id, code };
    if (code === ErrorCode.SOCKET_ERROR || code === ErrorCode.SEND_FAIL) log.debug(message, fields);
    else log.info(`closing connection: ${message}`, fields);
  }

  /** The internal address of this process (`lanIp:port`), set once it started. */
  get internalAddress(): string {
    return this.internalKey;
  }

  private async startInternal(): Promise<void> {
    this.epoch = Date.now();
    const port = this.startPort + this.id;
    this.idPrefix = clientIdPrefix(this.lanIp, port, this.epoch);
    this.internalKey = gatewayKey(this.lanIp, port);
    const gateway = this;
    this.pool = new WorkerPool(
      this.settings.router,
      { limit: this.settings.holdLimit ?? 100_000, timeoutMs: (this.settings.holdTimeout ?? 30) * 1000 },
      {
        gatewayAddress: this.internalKey,
        // Read when an envelope is made: the client-facing port is bound after this runs.
        get gatewayListen() {
          return gateway.listening;
        },
      },
    );
    const secret = this.settings.secretKey ?? '';
    const self = { role: 'gateway', name: `${this.name}#${this.id}`, address: this.internalKey, epoch: this.epoch };
    const internal = new Worker(`frame://${this.internalKey}`, {
      name: `${this.name}:internal`,
      maxSendBufferSize: this.settings.sendToWorkerBufferSize ?? DEFAULT_LINK_BUFFER,
      maxPackageSize: LINK_MAX_PACKAGE,
    });
    internal.onConnect = (conn) => {
      this.linkHandlers.set(
        conn.id,
        acceptLink(conn as Connection, {
          secret,
          self,
          onAuthenticated: (link) => this.linkUp(link),
          onClosed: (link) => this.linkDown(link),
        }),
      );
    };
    internal.onMessage = (conn, data) => this.linkHandlers.get(conn.id)?.onMessage(data as Buffer);
    internal.onClose = (conn) => {
      this.linkHandlers.get(conn.id)?.onClose();
      this.linkHandlers.delete(conn.id);
    };
    await internal.listen();
    this.internal = internal;
    this.registers = this.registerAddresses.map((address) =>
      dialLink(address, {
        secret,
        self,
        onOpen: (link) => link.write(encodeJson(Cmd.GATEWAY_ANNOUNCE, { addresses: [this.internalKey] })),
        onDown: () => log.debug('lost the register; reconnecting', { register: address }),
      }),
    );
    this.startHeartbeat();
    if (this.framing.protocol?.name === 'mqtt') this.startMqtt();
    log.debug('gateway internal port ready', { internal: this.internalKey });
  }

  private async stopInternal(): Promise<void> {
    for (const register of this.registers) register.close();
    // Clients close first so that workers get their close events over links still up.
    for (const client of this.clients.byCounter.values()) client.conn.close();
    const deadline = Date.now() + 1000;
    while (this.clients.byCounter.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 50));
    this.pool?.close();
    await this.internal?.close();
  }

  private limitsPackageSize(): number {
    return this.settings.maxPackageSize ?? 10 * 1024 * 1024;
  }

  private startHeartbeat(): void {
    const interval = this.settings.pingInterval ?? 0;
    if (interval <= 0) return;
    const limit = this.settings.pingNotResponseLimit ?? 0;
    const pingData = this.settings.pingData;
    Timer.add(interval, () => {
      const now = Date.now();
      for (const client of this.clients.byCounter.values()) {
        const silent = now - client.lastSeen;
        if (limit > 0 && silent >= interval * limit * 1000) {
          log.debug('heartbeat timeout, closing client', { client: client.id });
          client.conn.destroy();
        } else if (pingData !== undefined && silent >= interval * 1000) {
          client.conn.send(pingData);
        }
      }
    });
  }

  // ---- clients -------------------------------------------------------------------------------

  private clientConnected(conn: Connection): void {
    const client: Client = {
      counter: conn.id,
      id: makeClientId(this.idPrefix, conn.id),
      conn,
      uid: null,
      groups: null,
      session: null,
      sessionJson: null,
      version: 0,
      lastSeen: Date.now(),
      closed: false,
      subscriptions: null,
      mqtt: this.mqtt ? new MqttSession() : null,
    };
    this.clients.add(client);
    conn.context.clientId = client.id;
    // A WebSocket client is announced once its handshake request is known.
    if (this.framing.family !== 'websocket') this.dispatchConnect(client);
    this.callUser('onConnect', conn);
  }

  private clientUpgraded(conn: Connection, request: IncomingMessage): void {
    const client = this.clients.get(conn.id);
    if (!client) return;
    // The handshake travels once, with the connect event; the gateway does not keep it.
    this.dispatchConnect(client, Buffer.from(JSON.stringify({ websocket: { url: request.url ?? '/', headers: request.headers } })));
  }

  private dispatchConnect(client: Client, handshake = EMPTY): void {
    this.pool?.dispatch(client, Cmd.CLIENT_CONNECT, 0, handshake);
  }

  private clientMessage(conn: Connection, data: unknown, frameBinary?: boolean): void {
    const client = this.clients.get(conn.id);
    if (!client) return;
    if (this.mqtt && client.mqtt) {
      this.mqtt.receive(client, Buffer.isBuffer(data) ? data : payloadOf(data).bytes, this.framing.family === 'stream');
      // Bytes before a complete CONNECT do not keep a connection alive: the CONNECT timeout holds.
      if (client.mqtt.version !== 0) client.lastSeen = Date.now();
      return;
    }
    client.lastSeen = Date.now();
    // WebSocket text arrives as UTF-8 bytes with binary false (textAsBuffer); other protocols as decoded.
    const { bytes, binary } = frameBinary === false && Buffer.isBuffer(data) ? { bytes: data, binary: false } : payloadOf(data);
    this.pool?.dispatch(client, Cmd.CLIENT_MESSAGE, binary ? PayloadFlag.BINARY : 0, bytes);
  }

  private clientClosed(conn: Connection): void {
    const client = this.clients.get(conn.id);
    if (client) {
      this.clients.remove(client);
      this.subscriptions.removeAll(client);
      // An MQTT client's unfinished deliveries go back to the application with its close event.
      const mqtt = client.mqtt;
      this.pool?.dispatch(client, Cmd.CLIENT_CLOSE, 0, mqtt?.hasDeliveryState ? encodeMqttDeliveryState(mqtt.deliveryState()) : EMPTY);
    }
    this.callUser('onClose', conn);
  }

  private callUser(name: 'onConnect' | 'onClose', conn: Connection): void {
    const handler = this.settings[name];
    if (!handler) return;
    try {
      const result = handler(conn);
      if (result instanceof Promise) result.catch((error: unknown) => log.error(`gateway ${name} threw`, { conn: conn.id, error: describeError(error) }));
    } catch (error) {
      log.error(`gateway ${name} threw`, { conn: conn.id, error: describeError(error) });
    }
  }

  // ---- links ---------------------------------------------------------------------------------

  private linkUp(link: Link): void {
    if (link.peer.role === 'worker') this.pool?.add(link);
    else if (link.peer.role === 'client') this.apiLinks.add(link);
    else {
      log.warn('unexpected peer role on the internal port', { role: link.peer.role });
      link.conn.destroy();
      return;
    }
    link.onFrame = (cmd, body) => {
      try {
        this.command(link, cmd, body);
      } catch (error) {
        log.warn(`bad internal command ${cmd}: ${(error as Error).message}`, { peer: link.peer.name });
      }
    };
  }

  private linkDown(link: Link): void {
    this.apiLinks.delete(link);
    this.pool?.remove(link);
  }

  private command(link: Link, cmd: number, body: Buffer): void {
    switch (cmd) {
      case Cmd.ACK:
        this.pool?.ack(link, decodeU32(body));
        break;
      case Cmd.SEND: {
        const send = decodeSend(body);
        if (send.epoch !== this.epoch) break;
        const client = this.clients.get(send.counter);
        if (!client) break;
        if (client.mqtt && this.mqtt) {
          this.mqtt.sentByWorker(client.mqtt, send.payload);
          // CONNACK, SUBACK, PUBACK…: an MQTT client waits for them, so one that cannot be queued ends the connection.
          this.writeEssential(client.conn, this.encodeOnce(send.payload, send.flags));
        } else this.write(client.conn, this.encodeOnce(send.payload, send.flags));
        break;
      }
      case Cmd.BROADCAST:
        this.broadcast(body);
        break;
      case Cmd.PUBLISH:
        this.publish(decodePublish(body));
        break;
      case Cmd.CONTROL:
        this.control(link, decodeJson<ControlOp>(body));
        break;
      case Cmd.QUERY: {
        const { req, value } = decodeRequest<{ op: string; args: Record<string, unknown> }>(body);
        let result: unknown;
        try {
          result = { ok: this.queries.run(value.op, value.args ?? {}, this.epoch) };
        } catch (error) {
          result = { error: (error as Error).message };
        }
        link.write(encodeRequest(Cmd.QUERY_RESULT, req, result));
        break;
      }
      case Cmd.DRAIN:
        this.pool?.drain(link);
        break;
      default:
        log.debug('unknown internal command', { cmd, peer: link.peer.name });
    }
  }

  /** One broadcast: the payload is encoded for the client protocol once, then written raw to each recipient. */
  private broadcast(body: Buffer): void {
    const message = decodeBroadcast(body);
    const excluded = message.excluded.length > 0 && message.epoch === this.epoch ? new Set(message.excluded) : null;
    let recipients: Iterable<Client>;
    if (message.target === Target.ALL) recipients = this.clients.byCounter.values();
    else if (message.target === Target.CLIENTS) {
      if (message.epoch !== this.epoch) return;
      recipients = (message.targets as number[]).map((counter) => this.clients.get(counter)).filter((c): c is Client => c !== undefined);
    } else {
      const index = message.target === Target.GROUPS ? this.clients.groups : this.clients.uids;
      const names = message.targets as string[];
      if (names.length === 1) recipients = index.get(names[0]) ?? [];
      else {
        const union = new Set<Client>();
        for (const name of names) for (const client of index.get(name) ?? []) union.add(client);
        recipients = union;
      }
    }
    const wire = this.encodeOnce(message.payload, message.flags);
    for (const client of recipients) {
      if (excluded?.has(client.counter)) continue;
      this.write(client.conn, wire);
    }
  }

  /**
   * Writes wire bytes to a client, corked until the current batch of worker frames is done: the
   * replies a worker sent together leave in one syscall per client.
   */
  private write(conn: Connection, wire: Buffer | string): SendResult {
    if (!this.corked.has(conn)) {
      conn.cork();
      this.corked.add(conn);
      if (this.corked.size === 1) process.nextTick(this.uncorkAll);
    }
    return conn.send(wire, true);
  }

  /** {@link write} for bytes the client cannot do without: when its send buffer is full, the connection ends. */
  private writeEssential(conn: Connection, wire: Buffer | string): void {
    if (this.write(conn, wire) === false && conn.status === 'established') {
      log.info('send buffer full: closing the connection rather than losing a packet', { client: this.clients.get(conn.id)?.id ?? conn.id });
      conn.destroy();
    }
  }

  private readonly uncorkAll = (): void => {
    for (const conn of this.corked) conn.uncork();
    this.corked.clear();
  };

  private encodeOnce(payload: Buffer, flags: number): Buffer | string {
    if (flags & PayloadFlag.RAW) return payload;
    const binary = (flags & PayloadFlag.BINARY) !== 0;
    const { family, protocol } = this.framing;
    // The payload's bytes are framed as they are: text stays UTF-8 bytes, never a JS string.
    if (family === 'websocket') return encodeFrame(payload, !binary);
    if (protocol) return protocol.encode(binary ? payload : payload.toString(), { maxPackageSize: this.limitsPackageSize(), protocolState: protocol.createState?.() });
    return payload;
  }

  /**
   * A topic publish: matched against this gateway's subscriptions, delivered once per client.
   * QoS 0 bytes are encoded once per protocol level and shared by every recipient.
   */
  private publish(message: PublishFrame): void {
    const properties = message.properties === null ? undefined : parseProperties(message.properties);
    if (message.target) {
      if (message.target.epoch !== this.epoch) return;
      const client = this.clients.get(message.target.counter);
      if (client) this.deliver(client, message, message.qos, message.retain, properties);
      return;
    }
    const from = message.from && message.from.epoch === this.epoch ? message.from.counter : null;
    const shared = new Map<number, Buffer | string>();
    const mqtt = this.mqtt;
    // The common case first, with no object per subscriber: an MQTT client with one filter, a QoS 0
    // delivery, no subscription id — the shared bytes. The rest (several filters may match one
    // client, which must get it once) goes through the merge below.
    let rest: Set<Client> | null = null;
    this.subscriptions.forEach(message.topic, (client, options) => {
      const session = client.mqtt;
      if (
        mqtt &&
        session &&
        session.version !== 0 &&
        (message.qos === 0 || options.qos === 0) &&
        !options.subscriptionId &&
        !session.refuses(message.topic, message.payload) &&
        client.subscriptions?.size === 1 &&
        !(options.noLocal && client.counter === from)
      ) {
        this.write(client.conn, this.sharedPublish(shared, mqtt, session, message, options.retainAsPublished && message.retain, properties));
        return;
      }
      (rest ??= new Set()).add(client);
    });
    if (rest === null) return;
    const others: Set<Client> = rest;
    for (const [client, match] of this.subscriptions.match(message.topic, from)) {
      if (!others.has(client)) continue;
      const qos = Math.min(message.qos, match.qos) as 0 | 1 | 2;
      const retain = match.retainAsPublished && message.retain;
      const session = client.mqtt;
      if (mqtt && session && session.version !== 0 && qos === 0 && !match.subscriptionIds && !session.refuses(message.topic, message.payload)) {
        this.write(client.conn, this.sharedPublish(shared, mqtt, session, message, retain, properties));
        continue;
      }
      const ids = match.subscriptionIds;
      const withIds = ids ? { ...properties, subscriptionIdentifier: ids.length === 1 ? ids[0] : ids } : properties;
      this.deliver(client, message, qos, retain, withIds, shared);
    }
  }

  /** QoS 0 PUBLISH wire bytes, encoded once per protocol level and retain flag for all recipients. */
  private sharedPublish(
    shared: Map<number, Buffer | string>,
    mqtt: MqttLayer<Client>,
    session: MqttSession,
    message: PublishFrame,
    retain: boolean,
    properties: IPublishPacket['properties'],
  ): Buffer | string {
    const key = session.version * 2 + (retain ? 1 : 0);
    let wire = shared.get(key);
    if (wire === undefined) {
      wire = this.encodeOnce(mqtt.encodePublish(session, { topic: message.topic, payload: message.payload, retain, properties }, 0, 0), PayloadFlag.BINARY);
      shared.set(key, wire);
    }
    return wire;
  }

  private deliver(client: Client, message: PublishFrame, qos: 0 | 1 | 2, retain: boolean, properties: IPublishPacket['properties'], shared?: Map<number, Buffer | string>): void {
    if (client.mqtt && this.mqtt) {
      this.mqtt.deliver(client, { topic: message.topic, payload: message.payload, retain, properties }, qos);
      return;
    }
    // Other protocols get the payload as a plain message.
    let wire = shared?.get(-1);
    if (wire === undefined) {
      wire = this.encodeOnce(message.payload, message.binary ? PayloadFlag.BINARY : 0);
      shared?.set(-1, wire);
    }
    this.write(client.conn, wire);
  }

  private startMqtt(): void {
    const gateway = this;
    this.mqtt = new MqttLayer<Client>(
      {
        session: (client) => client.mqtt as MqttSession,
        forward: (client, packet) => gateway.pool?.dispatch(client, Cmd.CLIENT_MESSAGE, PayloadFlag.BINARY, packet),
        write: (client, packet, essential) => {
          const wire = gateway.encodeOnce(packet, PayloadFlag.BINARY);
          if (essential) gateway.writeEssential(client.conn, wire);
          else gateway.write(client.conn, wire);
        },
        close: (client, _reason, last) => (last ? client.conn.close(last) : client.conn.close()),
        log: (message, client) => log.info(message, { client: client.id }),
      },
      this.limitsPackageSize(),
    );
    const connectTimeout = (this.settings.mqttConnectTimeout ?? 10) * 1000;
    // Keep-alive: a client silent for 1.5 × its keep-alive is gone (MQTT §3.1.2.10).
    Timer.add(0.25, () => {
      const now = Date.now();
      for (const client of this.clients.byCounter.values()) {
        const session = client.mqtt;
        if (!session) continue;
        const silent = now - client.lastSeen;
        if (session.version === 0 ? silent > connectTimeout : session.keepAliveMs > 0 && silent > session.keepAliveMs * 1.5) {
          log.debug(session.version === 0 ? 'no CONNECT in time, closing' : 'MQTT keep-alive timeout, closing', { client: client.id });
          const last = this.mqtt?.keepAliveDisconnect(session);
          if (last) {
            client.conn.close(last);
            // The peer is silent: do not wait for it to read the DISCONNECT.
            setTimeout(() => client.conn.destroy(), 200).unref();
          } else client.conn.destroy();
          client.lastSeen = Infinity;
        }
      }
    });
  }

  private control(link: Link, op: ControlOp): void {
    if (op.op === 'ungroup') {
      this.clients.ungroup(requireString(op.group, 'group'));
      return;
    }
    if (op.epoch !== this.epoch) return;
    const client = this.clients.get(op.counter);
    if (!client) return;
    switch (op.op) {
      case 'joinGroup':
        this.clients.joinGroup(client, requireString(op.group, 'group'));
        break;
      case 'leaveGroup':
        this.clients.leaveGroup(client, requireString(op.group, 'group'));
        break;
      case 'bindUid':
        this.clients.bindUid(client, requireString(op.uid, 'uid'));
        break;
      case 'unbindUid':
        if (op.uid === undefined || op.uid === client.uid) this.clients.unbindUid(client);
        break;
      case 'close':
        if (op.data !== undefined) client.conn.close(op.binary ? Buffer.from(op.data, 'base64') : op.data);
        else client.conn.close();
        break;
      case 'destroy':
        client.conn.destroy();
        break;
      case 'setSession': {
        const base = client.version;
        if (op.base === undefined || op.base === base || !op.set) {
          this.clients.setSession(client, (op.session ?? null) as Record<string, unknown> | null);
        } else {
          // Written from a stale copy: apply only the keys that writer changed.
          const next: Record<string, unknown> = { ...(client.session ?? {}), ...(op.set as Record<string, unknown>) };
          for (const key of op.unset ?? []) delete next[key];
          this.clients.setSession(client, next);
        }
        if (op.base === base) this.pool?.sessionWritten(link, client, base);
        break;
      }
      case 'subscribe': {
        const qos = op.qos === 1 || op.qos === 2 ? op.qos : 0;
        this.subscriptions.add(client, requireString(op.filter, 'filter'), {
          qos,
          noLocal: op.noLocal === true,
          retainAsPublished: op.retainAsPublished === true,
          subscriptionId: typeof op.subscriptionId === 'number' ? op.subscriptionId : undefined,
        });
        break;
      }
      case 'unsubscribe':
        this.subscriptions.remove(client, requireString(op.filter, 'filter'));
        break;
      case 'restoreMqtt':
        if (client.mqtt && this.mqtt) {
          this.mqtt.restore(client, {
            awaitingRelease: op.awaitingRelease ?? [],
            unacked: (op.unacked ?? []).map(({ properties, ...m }) => ({
              ...m,
              payload: Buffer.from(m.payload, 'base64'),
              ...(typeof properties === 'string' ? { properties: parseProperties(properties) as UnackedMessage['properties'] } : {}),
            })),
          });
        }
        break;
      case 'updateSession':
        this.clients.setSession(client, deepMerge(client.session ?? {}, (op.session ?? {}) as Record<string, unknown>));
        break;
    }
  }
}

/** A control command from a worker or GatewayClient. */
interface ControlOp {
  op: 'joinGroup' | 'leaveGroup' | 'ungroup' | 'bindUid' | 'unbindUid' | 'close' | 'destroy' | 'setSession' | 'updateSession' | 'subscribe' | 'unsubscribe' | 'restoreMqtt';
  counter: number;
  epoch: number;
  group?: string;
  uid?: string;
  data?: string;
  binary?: boolean;
  session?: unknown;
  /** Keys a worker's handler changed and removed, for a write-back from a stale copy. */
  set?: unknown;
  unset?: string[];
  base?: number;
  filter?: string;
  qos?: number;
  noLocal?: boolean;
  retainAsPublished?: boolean;
  subscriptionId?: number;
  awaitingRelease?: number[];
  unacked?: Array<Omit<UnackedMessage, 'payload' | 'properties'> & { payload: string; properties?: string }>;
}

/** MQTT 5 publish properties from their wire JSON (correlation data travels as base64). */
function parseProperties(json: string): IPublishPacket['properties'] {
  const value = JSON.parse(json) as Record<string, unknown>;
  if (typeof value.correlationData === 'string') value.correlationData = Buffer.from(value.correlationData, 'base64');
  return value as IPublishPacket['properties'];
}

/** The HTTP side of a WebSocket gateway: the user's handler first, then the static files. */
function httpHandlerOf(options: GatewayOptions): ((request: IncomingMessage, response: ServerResponse) => void) | undefined {
  const files = options.staticDir ? staticFiles(options.staticDir) : undefined;
  const handler = options.httpHandler;
  if (!handler) return files;
  const fallback = (request: IncomingMessage, response: ServerResponse): void => {
    if (files) files(request, response);
    else {
      response.writeHead(404, { 'Content-Type': 'text/plain' });
      response.end('404 Not Found\n');
    }
  };
  return (request, response) => {
    Promise.resolve()
      .then(() => handler(request, response))
      .then(
        (answered) => {
          if (!answered && !response.headersSent) fallback(request, response);
        },
        (error: unknown) => {
          log.error('gateway httpHandler threw', { url: request.url, error: describeError(error) });
          if (!response.headersSent) {
            response.writeHead(500, { 'Content-Type': 'text/plain' });
            response.end('500 Internal Server Error\n');
          } else response.destroy();
        },
      );
  };
}

function requireString(value: unknown, name: string): string {
  if (typeof value !== 'string' || value === '') throw new TypeError(`${name} must be a non-empty string`);
  return value;
}
