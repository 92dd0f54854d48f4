/**
 * Minimal structured logger for the master: one line per event,
 * `<iso time> <level> master pid=<pid> <message> key=value…`.
 */

export type LogFields = Record<string, string | number | boolean | null | undefined>;
export type LogLevel = 'info' | 'warn' | 'error';

/** Where lines go; tests and the daemon redirect stdout, so the default is enough. */
let sink: (line: string) => void = (line) => process.stdout.write(line + '\n');

/** Replace the output function (returns the previous one). */
export function setLogSink(next: (line: string) => void): (line: string) => void {
  const prev = sink;
  sink = next;
  return prev;
}

function formatValue(value: string | number | boolean | null): string {
  const text = String(value);
  // Quote values with spaces or quotes so a line stays machine-splittable.
  return /[\s"=]/.test(text) ? JSON.stringify(text) : text;
}

/** Format one log line (exported for tests). */
export function formatLine(level: LogLevel, message: string, fields: LogFields = {}, now = new Date()): string {
  let line = `${now.toISOString()} ${level.padEnd(5)} master pid=${process.pid} ${message}`;
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
  }
  return line;
}

export const log = {
  info(message: string, fields?: LogFields): void {
    sink(formatLine('info', message, fields));
  },
  warn(message: string, fields?: LogFields): void {
    sink(formatLine('warn', message, fields));
  },
  error(message: string, fields?: LogFields): void {
    sink(formatLine('error', message, fields));
  },
};
