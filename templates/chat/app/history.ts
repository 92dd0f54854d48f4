/**
 * The last messages of each room, kept on disk so they survive a restart and are shared by every
 * BusinessWorker process: one JSON line per message in {{envPrefix}}DATA_DIR/<room>.jsonl
 * (default: data/{{appName}}/ in the project).
 *
 * Appends are single small writes in append mode, so processes do not interleave lines. A file
 * that grows past MAX_BYTES is renamed to <room>.old.jsonl (an atomic step; the next append starts
 * a new file), and reads look at both files, so the store stays bounded without locks.
 */
import { appendFile, readFile, rename, stat, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const HISTORY_SIZE = 50;
const MAX_BYTES = 256 * 1024;

const dataDir = process.env.{{envPrefix}}DATA_DIR ?? fileURLToPath(new URL('../../data/{{appName}}/', import.meta.url));

const fileOf = (room: string, suffix = '') => join(dataDir, `${encodeURIComponent(room)}${suffix}.jsonl`);

/** Adds one message to a room's history. */
export async function appendMessage(room: string, message: object): Promise<void> {
  const file = fileOf(room);
  await mkdir(dataDir, { recursive: true });
  await appendFile(file, `${JSON.stringify(message)}\n`);
  const { size } = await stat(file);
  if (size > MAX_BYTES) await rename(file, fileOf(room, '.old')).catch(() => {});
}

/** The room's last HISTORY_SIZE messages, oldest first. */
export async function recentMessages(room: string): Promise<object[]> {
  const lines = [...(await readLines(fileOf(room, '.old'))), ...(await readLines(fileOf(room)))];
  const messages: object[] = [];
  for (const line of lines.slice(-HISTORY_SIZE)) {
    try {
      messages.push(JSON.parse(line));
    } catch {
      // a line cut short by a crash: skip it
    }
  }
  return messages;
}

async function readLines(file: string): Promise<string[]> {
  try {
    return (await readFile(file, 'utf8')).split('\n').filter((line) => line !== '');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
