/** Process facts from /proc: the processes of a group, their CPU time and resident memory. */
import fs from 'node:fs';

const TICK_US = 1e6 / 100; // CLK_TCK is 100 on Linux

interface Stat {
  pid: number;
  pgrp: number;
  cpuUs: number;
}

function readStat(pid: number): Stat | null {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may contain spaces and parentheses: fields start after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { pid, pgrp: Number(fields[2]), cpuUs: (Number(fields[11]) + Number(fields[12])) * TICK_US };
  } catch {
    return null;
  }
}

/** Every live process whose process group is `pgid` (a server tree started detached). */
export function groupPids(pgid: number): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(Number(entry));
    if (stat && stat.pgrp === pgid) pids.push(stat.pid);
  }
  return pids;
}

/** User + system CPU time of these processes, µs (10 ms resolution). */
export function cpuUs(pids: number[]): number {
  let total = 0;
  for (const pid of pids) total += readStat(pid)?.cpuUs ?? 0;
  return total;
}

/** Resident set size in KB. */
export function rssKb(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}

/** The process title / command line, for telling gateways from workers. */
export function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '';
  }
}

/**
 * Read and write system calls made by these processes (`syscr` / `syscw` of /proc/<pid>/io: the
 * read/readv/recv… and write/writev/send… families), to see how well a server batches.
 */
export function syscalls(pids: number[]): { reads: number; writes: number } {
  let reads = 0;
  let writes = 0;
  for (const pid of pids) {
    try {
      const text = fs.readFileSync(`/proc/${pid}/io`, 'utf8');
      reads += Number(/syscr: (\d+)/.exec(text)?.[1] ?? 0);
      writes += Number(/syscw: (\d+)/.exec(text)?.[1] ?? 0);
    } catch {}
  }
  return { reads, writes };
}

/** CPU of `pids` over a window: call the returned function at its end. */
export function cpuWindow(pids: () => number[]): () => { cpuUs: number; ms: number } {
  const list = pids();
  const start = cpuUs(list);
  const t0 = performance.now();
  return () => ({ cpuUs: cpuUs(list) - start, ms: performance.now() - t0 });
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
