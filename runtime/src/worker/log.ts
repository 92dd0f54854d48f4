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
    const line = formatLine(level, this.role, message, { ...this.fields, ...fields });
    (level === 'error' || level === 'warn' ? process.stderr : process.stdout).write(line + '\n');
  }
}

/** One log line: text (`<time> <level> <role> pid=<pid> <message> key=value…`) or JSON. */
export function formatLine(level: LogLevel, role: string, message: string, fields: LogFields = {}, now = new Date()): string {
  const time = now.toISOString();
  if (process.env.GATEWAYWORKER_LOG_FORMAT === 'json') {
    return JSON.stringify({ time, level, role, pid: process.pid, msg: message, ...fields });
  }
  let line = `${time} ${level.padEnd(5)} ${role} pid=${process.pid} ${message}`;
  for (const key in fields) {
    const value = fields[key];
    if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
  }
  return line;
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
