/**
 * The multi-process load driver: N forked node processes (driver/client.ts), each holding up to
 * a few thousand client sockets bound to its own 127.0.x.y source address.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Command } from '../driver/client.js';

const entry = fileURLToPath(new URL('../driver/client.ts', import.meta.url));

export class Driver {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  readonly up: Promise<void>;
  /** Unsolicited notices from the driver (id -1), e.g. MQTT credit for other drivers. */
  onNotice: (notice: { event: string; group: string; credits: number[] }) => void = () => {};

  constructor(readonly proc: ChildProcess) {
    let markUp!: () => void;
    this.up = new Promise((resolve) => (markUp = resolve));
    proc.on('message', (message: { id: number; ok: boolean; reply?: unknown; error?: string; event?: string; group?: string; credits?: number[] }) => {
      if (message.id === 0) return markUp();
      if (message.id === -1) return this.onNotice(message as { event: string; group: string; credits: number[] });
      const waiter = this.waiting.get(message.id);
      this.waiting.delete(message.id);
      if (message.ok) waiter?.resolve(message.reply);
      else waiter?.reject(new Error(`driver ${proc.pid}: ${message.error}`));
    });
    proc.on('exit', (code, signal) => {
      for (const waiter of this.waiting.values()) waiter.reject(new Error(`driver ${proc.pid} exited (${code ?? signal})`));
      this.waiting.clear();
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  call<T = unknown>(cmd: Command): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.proc.send({ id, cmd });
    });
  }
}

export class DriverPool {
  readonly drivers: Driver[] = [];
  private addressCounter = 0;
  private readonly octets: [number, number];

  constructor(count: number) {
    // Fresh source addresses per run and per connect batch: explicitly bound source ports would
    // collide with TIME_WAIT entries a previous batch left behind.
    this.octets = [1 + Math.floor(Math.random() * 250), Math.floor(Math.random() * 200)];
    for (let i = 0; i < count; i++) {
      const proc = fork(entry, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const driver = new Driver(proc);
      driver.onNotice = (notice) => this.relay(notice);
      this.drivers.push(driver);
    }
  }

  /** MQTT QoS 1: the subscriber's driver returns credit to the drivers whose messages it got. */
  private relay(notice: { event: string; group: string; credits: number[] }): void {
    if (notice.event !== 'credit') return;
    notice.credits.forEach((n, index) => {
      const target = this.drivers[index];
      if (n > 0 && target?.proc.connected) target.proc.send({ id: -1, cmd: { op: 'credit', group: notice.group, n } });
    });
  }

  async ready(): Promise<void> {
    await Promise.all(this.drivers.map((d) => d.up));
  }

  /** A source address nobody used in this run yet (127.a.b.c, c walks 2…254 then b moves on). */
  nextAddress(): string {
    const n = this.addressCounter++;
    const b = (this.octets[1] + Math.floor(n / 250)) % 256;
    return `127.${this.octets[0]}.${b}.${2 + (n % 250)}`;
  }

  pids(): number[] {
    return this.drivers.map((d) => d.pid);
  }

  kill(): void {
    for (const d of this.drivers) if (d.proc.exitCode === null) d.proc.kill('SIGKILL');
  }
}
