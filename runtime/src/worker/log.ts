/**
 * Structured, quiet-by-default logging: one line per event with level, role and pid, so that
 * the output of many processes interleaved in one terminal or log file stays readable and greppable.
 *
 * `GATEWAYWORKER_LOG_LEVEL` = debug | info | warn | error | silent (default info);
 * `GATEWAYWORKER_LOG_FORMAT=json` prints one JSON object per line instead of text.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, string | number | boolean | null | undefined>;

const ORDER: Record<LogLevel | 'silent', number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

function threshold(): number {
  const level = process.env.GATEWAYWORKER_LOG_LEVEL as LogLevel | 'silent' | undefined;
  return ORDER[level ?? 'info'] ?? ORDER.info;
}

/** A logger bound to a role (`master`, `Gateway#0`, …) and extra fields. */
export class Logger {
  constructor(
    readonly role: string,
    private readonly fields: LogFields = {},
  ) {}

  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger {
    return new Logger(this.role, { ...this.fields, ...fields });
  }

  debug(message: string, fields?: LogFields): void {
    this.write('debug', message, fields);
  }

  info(message: string, fields?: LogFields): void {
    this.write('info', message, fields);
  }

  warn(message: string, fields?: LogFields): void {
    this.write('warn', message, fields);
  }

  error(message: string, fields?: LogFields): void {
    this.write('error', message, fields);
  }

  private write(level: LogLevel, message: string, fields?: LogFields): void {
    if (ORDER[level] < threshold()) return;
    const all: LogFields = { ...this.fields, ...fields };
    const time = new Date().toISOString();
    let line: string;
    if (process.env.GATEWAYWORKER_LOG_FORMAT === 'json') {
      line = JSON.stringify({ time, level, role: this.role, pid: process.pid, msg: message, ...all });
    } else {
      let extra = '';
      for (const key in all) {
        const value = all[key];
        if (value !== undefined) extra += ` ${key}=${formatValue(value)}`;
      }
      line = `${time} ${level.padEnd(5)} ${this.role} pid=${process.pid} ${message}${extra}`;
    }
    (level === 'error' || level === 'warn' ? process.stderr : process.stdout).write(line + '\n');
  }
}

function formatValue(value: string | number | boolean | null): string {
  if (typeof value !== 'string') return String(value);
  return /[\s"=]/.test(value) || value === '' ? JSON.stringify(value) : value;
}

/** Turns whatever was thrown into a one-line description with the stack on debug. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.stack ?? `${error.name}: ${error.message}`;
  return String(error);
}

/** The process-wide logger; roles set their own with `setRole`. */
export let log = new Logger('main');

/** Names this process in every later log line (e.g. `Gateway#1`). */
export function setRole(role: string): void {
  log = new Logger(role);
}
