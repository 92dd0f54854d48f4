/**
 * The socket half of a move: stop reading at the libuv handle and take what Node already read,
 * wait for outgoing bytes to reach the kernel, give the socket back (abort) or let it go
 * without a FIN (commit), and wrap a received handle without reading from it.
 * Every step here answers a trap a prototype hit on Linux (DESIGN.md §3, notes/handover.md).
 */
import net from 'node:net';

interface StreamHandle {
  reading: boolean;
  readStop(): number;
  readStart(): number;
}

interface SocketInternals {
  _handle: StreamHandle | null;
  _readableState: { reading: boolean; length: number; flowing: boolean | null; ended: boolean };
}

/** A socket whose reading is stopped, with the bytes Node had read but not delivered. */
export interface QuiescedSocket {
  /** Bytes taken from the socket's readable buffer, in order. */
  readonly taken: Buffer[];
  /** Undo: the taken bytes go back in front and reading resumes as before. */
  restore(): void;
}

/**
 * Stops reading at the handle (`pause()` alone does not stop libuv), then empties the readable
 * buffer with the `data` listeners detached one by one (removing them all at once, or reading
 * while they listen, would hand the bytes to the parser or to nobody).
 */
export function quiesce(socket: net.Socket): QuiescedSocket {
  const internals = socket as unknown as SocketInternals;
  const handle = internals._handle;
  if (!handle) throw new Error('socket has no handle');
  const flowing = internals._readableState.flowing;
  handle.reading = false;
  handle.readStop();
  socket.pause();
  const listeners = socket.listeners('data') as Array<(chunk: Buffer) => void>;
  for (const listener of listeners) socket.removeListener('data', listener);
  const taken: Buffer[] = [];
  for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) taken.push(chunk);
  // read() may have asked the handle to read again: stop it, and clear the stream's "a read is
  // pending" flag, or a later resume would wait forever for a push that never comes.
  handle.reading = false;
  handle.readStop();
  internals._readableState.reading = false;
  let restored = false;
  return {
    taken,
    restore: () => {
      if (restored) return;
      restored = true;
      for (let i = taken.length - 1; i >= 0; i--) socket.unshift(taken[i]!);
      for (const listener of listeners) socket.on('data', listener);
      internals._readableState.reading = false;
      // Paused (pauseRecv or backpressure): the stream restarts the handle when it is resumed.
      if (flowing !== false) socket.resume();
    },
  };
}

/** True when the socket can still carry data both ways. */
export function isFullyOpen(socket: net.Socket): boolean {
  const state = (socket as unknown as SocketInternals)._readableState;
  return !socket.destroyed && socket.writable && !socket.writableEnded && !state.ended && !socket.readableEnded && socket.readyState === 'open';
}

/**
 * Resolves true once everything written so far (plus `extra()` bytes held above the socket)
 * reached the kernel, false after `timeoutMs` (the peer is not reading).
 */
export function flush(socket: net.Socket, extra: () => number, timeoutMs: number): Promise<boolean> {
  if (socket.writableLength === 0 && extra() === 0) return Promise.resolve(true);
  return new Promise((resolve) => {
    const deadline = Date.now() + timeoutMs;
    let timer: NodeJS.Timeout | null = null;
    const check = (): void => {
      if (socket.destroyed) return done(false);
      if (socket.writableLength === 0 && extra() === 0) return done(true);
      if (Date.now() >= deadline) return done(false);
      timer = setTimeout(check, socket.writableLength === 0 ? 1 : 2);
    };
    const done = (ok: boolean): void => {
      if (timer) clearTimeout(timer);
      timer = null;
      socket.off('drain', check);
      resolve(ok);
    };
    socket.on('drain', check);
    timer = setTimeout(check, 1);
  });
}

/** The raw libuv handle to send over IPC (never the net.Socket: Node would close it on ack). */
export function handleOf(socket: net.Socket): object {
  const handle = (socket as unknown as SocketInternals)._handle;
  if (!handle) throw new Error('socket has no handle');
  return handle;
}

/**
 * Lets the socket go after its handle reached another process: no listener hears of it and
 * the fd is closed without shutdown (no FIN: the other process's copy keeps the connection).
 */
export function release(socket: net.Socket): void {
  socket.removeAllListeners();
  socket.on('error', () => {});
  socket.destroy();
}

/** Wraps a handle received from the master without reading from it. */
export function wrapHandle(handle: object): net.Socket {
  const socket = new net.Socket({ handle: handle as never, pauseOnCreate: true } as net.SocketConstructorOpts);
  socket.on('error', () => {});
  return socket;
}

/** Starts reading a socket made by {@link wrapHandle} (after the move committed). */
export function startReading(socket: net.Socket): void {
  (socket as unknown as SocketInternals)._readableState.reading = false;
  socket.resume();
}
