/** The pid file: who owns this entry's master. */
import fs from 'node:fs';
import path from 'node:path';

/** True if a process with this pid exists (EPERM means it exists but is not ours). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid in the file, or null when the file is missing or unreadable. */
export function readPid(file: string): number | null {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** The pid of the live master owning `file`, or null (a stale file counts as none). */
export function runningMaster(file: string): number | null {
  const pid = readPid(file);
  return pid !== null && pid !== process.pid && isAlive(pid) ? pid : null;
}

/** Write our pid (creating the directory). */
export function writePid(file: string, pid = process.pid): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${pid}\n`);
}

/** Remove the file if it still names `pid` (never delete a successor's file). */
export function removePid(file: string, pid = process.pid): void {
  if (readPid(file) === pid) fs.rmSync(file, { force: true });
}
