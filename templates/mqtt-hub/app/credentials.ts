/**
 * Device credentials: `<dataDir>/devices.json` maps each device id to a salted scrypt hash of its
 * password. Passwords are random and shown once by `npm run device:add <id>`; the file never holds
 * them. The workers re-read the file when it changes, so a device added while the hub runs can
 * connect at once.
 */
import { createHmac, randomBytes, scrypt, timingSafeEqual, type BinaryLike, type ScryptOptions } from 'node:crypto';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { log } from 'gatewayworker';
import { config } from './config.ts';

/** One device's entry in devices.json. */
export interface DeviceRecord {
  /** Random salt, hex. */
  salt: string;
  /** scrypt(password, salt), hex. */
  hash: string;
  /** When the password was set (ISO 8601). */
  created: string;
}

/** A device id: 1–64 characters of letters, digits, `_`, `.` and `-` (it is also a topic level). */
export const DEVICE_ID = /^[A-Za-z0-9_.-]{1,64}$/;

/** Thrown by {@link addDevice} and {@link removeDevice}; `message` is one line for a person. */
export class DeviceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceError';
  }
}

const KEY_LENGTH = 32;
// Node's defaults (N=16384, r=8, p=1): ~20 ms and 16 MB per check, which is fine for connects.
const SCRYPT: ScryptOptions = { N: 16384, r: 8, p: 1 };

const scryptAsync = (password: BinaryLike, salt: BinaryLike): Promise<Buffer> =>
  new Promise((resolve, reject) =>
    scrypt(password, salt, KEY_LENGTH, SCRYPT, (error, key) => (error ? reject(error) : resolve(key))),
  );

/** Whether `id` is a valid device id (see {@link DEVICE_ID}). */
export function isValidDeviceId(id: string): boolean {
  return DEVICE_ID.test(id) && id !== '.' && id !== '..';
}

/** What a device id must be, for messages. */
const DEVICE_ID_RULE = '1-64 characters of A-Z a-z 0-9 _ . -';

/** Where the credentials live (`<dataDir>/devices.json`, or another file for tests). */
export class CredentialStore {
  /**
   * Where problems with the file go (invalid device ids in it): the log by default; the
   * `device:add` script prints them as plain lines.
   */
  onWarning: (message: string) => void = (message) => log.warn(message);
  private cache: Map<string, DeviceRecord> = new Map();
  /**
   * Entries of the file whose id is not a valid device id (a hand edit): refused — such a device
   * cannot connect, its `:` or `/` would break the session keys and topics built from ids — but
   * kept in the file as they are, until removed.
   */
  private refused: Map<string, unknown> = new Map();
  /** mtime, size and inode of the file when {@link cache} was read; null: never read, or missing. */
  private cachedStamp: string | null = null;
  private loadedOnce = false;
  /**
   * Passwords recently verified, as HMACs under a key of this process (never the passwords), so a
   * reconnect storm does not run scrypt per device. Emptied whenever the file changes.
   */
  private readonly verified = new Map<string, string>();
  private readonly verifiedKey = randomBytes(32);

  constructor(readonly file: string = path.join(config.dataDir, 'devices.json')) {}

  /**
   * Whether `password` is the device's. Unknown ids cost as much as known ones, so timing does not
   * tell which ids exist.
   */
  async verifyDevice(id: string, password: string | Buffer): Promise<boolean> {
    const record = (await this.load()).get(id);
    const tag = createHmac('sha256', this.verifiedKey).update(id).update('\0').update(password).digest('hex');
    const known = record && this.verified.get(id);
    if (known && timingSafeEqual(Buffer.from(known, 'hex'), Buffer.from(tag, 'hex'))) return true;
    const salt = record ? Buffer.from(record.salt, 'hex') : DUMMY_SALT;
    const expected = record ? Buffer.from(record.hash, 'hex') : DUMMY_HASH;
    const actual = await scryptAsync(password, salt);
    const ok = record !== undefined && expected.length === actual.length && timingSafeEqual(expected, actual);
    if (ok) {
      if (this.verified.size >= MAX_VERIFIED) this.verified.clear();
      this.verified.set(id, tag);
    }
    return ok;
  }

  /**
   * Creates a device with a random password (24 characters, base64url) and returns the password;
   * only its hash is stored. Refuses an invalid id, or an existing one unless `replace` (which sets
   * a new password: the old one stops working).
   */
  async addDevice(id: string, options: { replace?: boolean } = {}): Promise<string> {
    if (!isValidDeviceId(id)) {
      throw new DeviceError(`invalid device id ${JSON.stringify(id)}: use ${DEVICE_ID_RULE}`);
    }
    // A copy: if the write fails, what this process believes stays what the file says.
    const devices = new Map(await this.load(true));
    if (devices.has(id) && !options.replace) {
      throw new DeviceError(`device ${id} already exists (use --replace to give it a new password)`);
    }
    const password = randomBytes(18).toString('base64url');
    const salt = randomBytes(16);
    const hash = await scryptAsync(password, salt);
    devices.set(id, { salt: salt.toString('hex'), hash: hash.toString('hex'), created: new Date().toISOString() });
    await this.save(devices);
    return password;
  }

  /**
   * Deletes a device; its connections are not closed, but it can no longer connect. Also removes
   * an entry whose id is invalid. False if unknown.
   */
  async removeDevice(id: string): Promise<boolean> {
    const devices = new Map(await this.load(true));
    if (devices.delete(id)) {
      await this.save(devices);
      return true;
    }
    if (!this.refused.has(id)) return false;
    const refused = new Map(this.refused);
    refused.delete(id);
    await this.save(devices, refused);
    return true;
  }

  /** Ids in the file that are not valid device ids (refused; see {@link removeDevice}). */
  async invalidIds(): Promise<string[]> {
    await this.load();
    return [...this.refused.keys()];
  }

  /** Every device id with the date its password was set, sorted by id. */
  async listDevices(): Promise<Array<{ id: string; created: string }>> {
    return [...(await this.load()).entries()]
      .map(([id, record]) => ({ id, created: record.created }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** The devices, re-read when the file changed (or always with `fresh`, before a write). */
  private async load(fresh = false): Promise<Map<string, DeviceRecord>> {
    let stamp: string | null;
    try {
      const info = await stat(this.file);
      stamp = `${info.mtimeMs}:${info.size}:${info.ino}`;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      stamp = null;
    }
    if (!fresh && stamp === this.cachedStamp && this.loadedOnce) return this.cache;
    let devices: Map<string, DeviceRecord>;
    let refused: Map<string, unknown>;
    try {
      ({ devices, refused } = stamp === null ? { devices: new Map(), refused: new Map() } : parseDevices(await readFile(this.file, 'utf8'), this.file));
    } catch (error) {
      // A hand edit gone wrong: keep admitting the devices we knew rather than none. Writes
      // (fresh) refuse, so a broken file is never overwritten with a partial list.
      if (fresh || !this.loadedOnce) throw error;
      log.warn(`${(error as Error).message}; still using the devices read before`);
      this.cachedStamp = stamp;
      return this.cache;
    }
    for (const id of refused.keys()) {
      if (this.refused.has(id) && this.loadedOnce) continue; // told already
      this.onWarning(
        `${this.file}: device id ${JSON.stringify(id)} refused, that device cannot connect: a device id is ${DEVICE_ID_RULE} ` +
          `(remove the entry with: npm run device:add -- --remove '${id.replace(/'/g, "'\\''")}')`,
      );
    }
    this.cache = devices;
    this.refused = refused;
    this.cachedStamp = stamp;
    this.loadedOnce = true;
    this.verified.clear();
    return this.cache;
  }

  /** Writes the whole file atomically (temp file + rename), readable by its owner only; refused entries stay as they were. */
  private async save(devices: Map<string, DeviceRecord>, refused = this.refused): Promise<void> {
    await mkdir(path.dirname(this.file), { recursive: true });
    const entries: Array<[string, unknown]> = [...devices.entries(), ...refused.entries()];
    const sorted = Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    const temp = `${this.file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(temp, JSON.stringify(sorted, null, 2) + '\n', { mode: 0o600 });
    await rename(temp, this.file);
    this.cache = devices;
    this.refused = refused;
    this.cachedStamp = null;
    this.verified.clear();
  }
}

// Verifying an unknown id runs scrypt against these, so it takes as long as a known one.
const DUMMY_SALT = randomBytes(16);
const DUMMY_HASH = Buffer.alloc(KEY_LENGTH);
/** Bound of the verified-password cache (it is simply emptied when full). */
const MAX_VERIFIED = 100_000;

/**
 * Parses devices.json, skipping malformed entries (a hand edit gone wrong locks out one device,
 * not all). Entries under an invalid device id come back apart, as `refused`.
 */
function parseDevices(text: string, file: string): { devices: Map<string, DeviceRecord>; refused: Map<string, unknown> } {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file} is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new Error(`${file} must hold a JSON object`);
  const devices = new Map<string, DeviceRecord>();
  const refused = new Map<string, unknown>();
  for (const [id, value] of Object.entries(data as Record<string, unknown>)) {
    if (!isValidDeviceId(id)) {
      refused.set(id, value);
      continue;
    }
    const record = value as Partial<DeviceRecord> | null;
    if (record && typeof record.salt === 'string' && typeof record.hash === 'string') {
      devices.set(id, { salt: record.salt, hash: record.hash, created: typeof record.created === 'string' ? record.created : '' });
    }
  }
  return { devices, refused };
}

/** The credentials of this app (`<dataDir>/devices.json`). */
export const credentials = new CredentialStore();

/** See {@link CredentialStore.verifyDevice}. */
export const verifyDevice = (id: string, password: string | Buffer): Promise<boolean> => credentials.verifyDevice(id, password);
/** See {@link CredentialStore.addDevice}. */
export const addDevice = (id: string, options?: { replace?: boolean }): Promise<string> => credentials.addDevice(id, options);
/** See {@link CredentialStore.removeDevice}. */
export const removeDevice = (id: string): Promise<boolean> => credentials.removeDevice(id);
/** See {@link CredentialStore.listDevices}. */
export const listDevices = (): Promise<Array<{ id: string; created: string }>> => credentials.listDevices();
