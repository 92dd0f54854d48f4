// Fuzz of the client-id parser (runtime/src/internal/clientId.ts): random strings, random hex of
// every length around the two valid ones, mutants of valid ids, non-string values, and the
// textual forms of IP addresses a gateway's lanIp may be given in.
//
// Documented: parseClientId / gatewayKeyOf throw InvalidClientIdError (a TypeError with code
// ERR_GW_INVALID_CLIENT_ID); splitHostPort throws TypeError. Properties: nothing else is thrown,
// every accepted id re-encodes to itself, every id a gateway makes parses back to that gateway's
// key, and each call is bounded in time.
import assert from 'node:assert/strict';
import net from 'node:net';
import t from 'tap';
import { InvalidClientIdError, canonicalHost, clientIdPrefix, gatewayKey, gatewayKeyOf, makeClientId, parseClientId, splitHostPort } from '../../runtime/src/internal/clientId.js';
import { ErrorTally, Watchdog, applyMutations, fc, fuzz, knownBug, mutationArb, runs } from './lib.js';

const DEFAULT_RUNS = 2000;
/** A case over this (twice: see Watchdog.bounded) is a failure; these calls take microseconds. */
const CASE_LIMIT_MS = 2000;
const watchdog = new Watchdog(10_000);
t.teardown(() => watchdog.stop());

const u16 = fc.nat({ max: 0xffff });
const epoch48 = fc.nat({ max: 2 ** 48 - 1 });
const u32 = fc.nat({ max: 0xffffffff });

/** An IPv4 or IPv6 address in its canonical text form. */
const canonicalIp = fc.oneof(fc.ipV4(), fc.ipV6().map((a) => canonicalHost(a.toLowerCase())));

/** A valid id, from the parts a gateway makes it of. */
const validId = fc.tuple(canonicalIp, u16, epoch48, u32).map(([host, port, epoch, counter]) => ({ host, port, epoch, counter, id: makeClientId(clientIdPrefix(host, port, epoch), counter) }));

/** Runs `fn` under the watchdog and the time bound. */
function timed<T>(name: string, input: string, fn: () => T): T {
  return watchdog.bounded(name, Buffer.from(input), fn, CASE_LIMIT_MS).value;
}

/** parseClientId's contract on one string. */
function checkParse(id: string, tally: ErrorTally): void {
  let parts: ReturnType<typeof parseClientId>;
  try {
    parts = timed('parseClientId', id, () => parseClientId(id));
  } catch (error) {
    tally.add(error);
    assert.ok(error instanceof InvalidClientIdError, `undocumented ${(error as Error).name}: ${(error as Error).message} for ${JSON.stringify(id)}`);
    assert.equal((error as InvalidClientIdError).code, 'ERR_GW_INVALID_CLIENT_ID');
    assert.ok(!(id.length === 32 || id.length === 56) || !/^[0-9a-f]+$/.test(id), `a well-formed id was refused: ${id}`);
    return;
  }
  assert.ok(net.isIP(parts.host) !== 0, `host ${parts.host} is an IP`);
  assert.ok(Number.isInteger(parts.port) && parts.port >= 0 && parts.port <= 0xffff, `port ${parts.port}`);
  assert.ok(Number.isInteger(parts.epoch) && parts.epoch >= 0 && parts.epoch < 2 ** 48, `epoch ${parts.epoch}`);
  assert.ok(Number.isInteger(parts.counter) && parts.counter >= 0 && parts.counter <= 0xffffffff, `counter ${parts.counter}`);
  // One id, one client: the parts encode back to the same string.
  assert.equal(makeClientId(clientIdPrefix(parts.host, parts.port, parts.epoch), parts.counter), id, 'an accepted id re-encodes to itself');
  assert.equal(gatewayKeyOf(id), gatewayKey(parts.host, parts.port));
  // The key names a gateway the id can be routed to: it splits back into the same host and port.
  assert.deepEqual(splitHostPort(gatewayKey(parts.host, parts.port)), { host: parts.host, port: parts.port });
}

t.test('parseClientId: random strings, random hex, mutated ids, valid ids', async (t) => {
  const tally = new ErrorTally();
  const hexOf = (length: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: length, maxLength: length });
  const input = fc.oneof(
    { weight: 2, arbitrary: validId.map((v) => v.id) },
    // Every hex string of a valid length is an id: the parser must take all of them.
    { weight: 2, arbitrary: fc.constantFrom(32, 56).chain(hexOf) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 64 }).chain(hexOf) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 64 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 32, maxLength: 32 }) },
    { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF -xg\u0000\u0660'), minLength: 56, maxLength: 56 }) },
    {
      weight: 4,
      arbitrary: fc.tuple(validId, validId, fc.array(mutationArb, { minLength: 1, maxLength: 3 })).map(([a, b, m]) => applyMutations(Buffer.from(a.id), Buffer.from(b.id), m).toString('latin1')),
    },
  );
  await fuzz(t, 'parseClientId', fc.property(input, (id) => checkParse(id, tally)), {
    numRuns: runs(DEFAULT_RUNS),
    examples: [[''], ['0'.repeat(32)], ['f'.repeat(56)], ['F'.repeat(32)], [' '.repeat(32)], ['0'.repeat(31) + '\n'], ['٠'.repeat(32)]],
  });
  t.comment(`parseClientId errors: ${tally.toString() || 'none'}`);
});

t.test('valid ids round-trip to their parts', async (t) => {
  await fuzz(
    t,
    'clientIdPrefix/makeClientId → parseClientId',
    fc.property(validId, (v) => {
      const parts = timed('parseClientId', v.id, () => parseClientId(v.id));
      assert.deepEqual(parts, { host: v.host, port: v.port, epoch: v.epoch, counter: v.counter });
      assert.equal(gatewayKeyOf(v.id), gatewayKey(v.host, v.port));
    }),
    { numRuns: runs(DEFAULT_RUNS) },
  );
});

/** Values of any type, including the ones JSON.stringify cannot describe. */
const anyValue = fc.anything({ withBigInt: true, withBoxedValues: true, withMap: true, withSet: true, withTypedArray: true, withSparseArray: true, withNullPrototype: true });

t.test('parseClientId: non-string values (JSON-describable)', async (t) => {
  const tally = new ErrorTally();
  const describable = anyValue.filter((v) => typeof v !== 'string' && canStringify(v));
  await fuzz(
    t,
    'parseClientId(non-string)',
    fc.property(describable, (value) => {
      try {
        parseClientId(value as string);
        assert.fail(`accepted a ${typeof value}`);
      } catch (error) {
        tally.add(error);
        assert.ok(error instanceof InvalidClientIdError, `undocumented ${(error as Error).name}: ${(error as Error).message}`);
      }
    }),
    { numRuns: runs(500) },
  );
  t.comment(`errors: ${tally.toString()}`);
});

function canStringify(value: unknown): boolean {
  try {
    JSON.stringify(value);
    return true;
  } catch {
    return false;
  }
}

const TODO_DESCRIBE =
      'runtime bug (minor): InvalidClientIdError builds its message with JSON.stringify(id), which throws for a BigInt, a ' +
      'circular object or a throwing toJSON: parseClientId then throws that TypeError/Error (no code ERR_GW_INVALID_CLIENT_ID) instead. ' +
      'Fix in runtime/src/internal/clientId.ts, InvalidClientIdError constructor: describe non-strings without JSON ' +
      '(typeof id === "string" ? JSON.stringify(id) : `of type ${typeof id}`).';

t.test('parseClientId: values JSON.stringify cannot describe (known bug: todo)', async (t) => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    for (const [name, value] of [
      ['a BigInt', 10n],
      ['a circular object', circular],
      ['an object whose toJSON throws', { toJSON: () => { throw new Error('toJSON'); } }],
    ] as const) {
      let caught: unknown;
      try {
        parseClientId(value as unknown as string);
      } catch (error) {
        caught = error;
      }
      t.ok(caught instanceof InvalidClientIdError, `${name}: InvalidClientIdError (got ${(caught as Error)?.name}: ${(caught as Error)?.message?.split('\n')[0]})`, {
        todo: caught instanceof InvalidClientIdError ? undefined : knownBug(t, 'client-id-describe', TODO_DESCRIBE),
      });
    }
});

// ---- lanIp forms: an id made by a gateway must route back to that gateway --------------------------

/** One IPv6 address in many spellings: case, leading zeros, `::` anywhere it fits, an IPv4 tail. */
const ipv6Spelling = fc
  .record({
    groups: fc.array(fc.oneof(fc.constant(0), u16), { minLength: 8, maxLength: 8 }),
    upper: fc.boolean(),
    pad: fc.boolean(),
    compress: fc.option(fc.tuple(fc.nat({ max: 7 }), fc.integer({ min: 1, max: 8 }))),
    v4tail: fc.boolean(),
  })
  .map(({ groups, upper, pad, compress, v4tail }) => {
    const parts = groups.map((g) => (pad ? g.toString(16).padStart(4, '0') : g.toString(16)));
    let head = parts.slice(0, v4tail ? 6 : 8);
    let tail = v4tail ? `${groups[6] >> 8}.${groups[6] & 255}.${groups[7] >> 8}.${groups[7] & 255}` : '';
    let text: string;
    if (compress) {
      const [start, length] = compress;
      const end = Math.min(head.length, start + length);
      // `::` may only stand for zero groups.
      if (start < head.length && groups.slice(start, end).every((g) => g === 0)) {
        text = `${head.slice(0, start).join(':')}::${head.slice(end).join(':')}`;
        if (tail) text += (text.endsWith(':') ? '' : ':') + tail;
      } else text = [...head, ...(tail ? [tail] : [])].join(':');
    } else text = [...head, ...(tail ? [tail] : [])].join(':');
    head = [];
    tail = '';
    return upper ? text.toUpperCase() : text;
  })
  .filter((text) => net.isIPv6(text));

/** What the gateway does with its lanIp (Gateway.startInternal): make ids, announce its key. */
function checkLanIp(lanIp: string, port: number, epoch: number, counter: number): void {
  const announced = gatewayKey(lanIp, port);
  const id = makeClientId(clientIdPrefix(lanIp, port, epoch), counter);
  let parts: ReturnType<typeof parseClientId>;
  try {
    parts = parseClientId(id);
  } catch (error) {
    assert.fail(`gateway with lanIp ${lanIp} hands out id ${id}, which parseClientId refuses: ${(error as Error).message}`);
  }
  // GatewayLinks.owner() routes an id by gatewayKey(parts.host, parts.port) to the gateway whose
  // announced key is gatewayKey(lanIp, port): the two must be the same string.
  assert.equal(gatewayKey(parts.host, parts.port), announced, `an id made by the gateway at ${announced} routes to ${gatewayKey(parts.host, parts.port)}`);
}

t.test('ids made from canonical lanIp forms route back to their gateway', async (t) => {
  await fuzz(
    t,
    'canonical lanIp',
    fc.property(canonicalIp, u16, epoch48, u32, (ip, port, epoch, counter) => checkLanIp(ip, port, epoch, counter)),
    { numRuns: runs(DEFAULT_RUNS) },
  );
});

const TODO_LANIP =
      'runtime bug: a Gateway whose lanIp is an IPv6 address in a non-canonical spelling (upper case "FD00::1", leading ' +
      'zeros, uncompressed "0:0:0:0:0:0:0:1", an IPv4 tail) announces gatewayKey(lanIp) as given, but ids parse to the ' +
      'canonical host, so GatewayLinks.owner() never finds the gateway (every clientId API call on its clients fails as ' +
      'offline); with upper case the ids are not even lower-case hex and parseClientId refuses them. ' +
      'Fix in runtime/src/internal/clientId.ts: hostHex must lower-case (expandV6(host).toLowerCase()) and gatewayKey must ' +
      'canonicalise (const h = canonicalHost(host)), or the Gateway stores canonicalHost(lanIp) once (runtime/src/gateway/Gateway.ts:123).';

t.test('ids made from any IPv6 spelling of lanIp route back to their gateway (known bug: todo)', async (t) => {
  await fuzz(t, 'IPv6 lanIp spellings', fc.property(ipv6Spelling, u16, epoch48, u32, (ip, port, epoch, counter) => checkLanIp(ip, port, epoch, counter)), {
    numRuns: runs(500),
    examples: [['FD00::1', 2900, 1, 1], ['0:0:0:0:0:0:0:1', 2900, 1, 1], ['::0001', 2900, 1, 1]],
    todo: knownBug(t, 'lanip-spelling', TODO_LANIP),
  });
});

const TODO_ZONE =
  'runtime bug: clientIdPrefix("fe80::1%eth0", …) returns a prefix with "%eth0" in it (58 characters with the counter), so every id of that gateway is refused by parseClientId. Fix: hostHex throws TypeError for a zone id (host.includes("%")), as it does for a non-IP.';

t.test('a lanIp with an IPv6 zone id is refused, not turned into a broken id (known bug: todo)', async (t) => {
  let prefix: string | Error;
  try {
    prefix = clientIdPrefix('fe80::1%eth0', 2900, 1);
  } catch (error) {
    prefix = error as Error;
  }
  t.ok(prefix instanceof TypeError, `refused (got ${String(prefix)})`, { todo: prefix instanceof TypeError ? undefined : knownBug(t, 'lanip-zone-id', TODO_ZONE) });
});

// ---- splitHostPort -------------------------------------------------------------------------------

t.test('splitHostPort: random and mutated addresses', async (t) => {
  const tally = new ErrorTally();
  const address = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 48 }),
    fc.tuple(fc.constantFrom('', 'tcp://', 'frame://', 'text://', 'x:/'), fc.oneof(fc.ipV4(), fc.ipV6().map((a) => `[${a}]`), fc.domain()), fc.nat({ max: 200_000 })).map(([s, h, p]) => `${s}${h}:${p}`),
    fc.tuple(fc.string({ unit: fc.constantFrom(...'[]:0123456789abcdef./ '), maxLength: 40 })).map(([s]) => s),
  );
  await fuzz(
    t,
    'splitHostPort',
    fc.property(address, (text) => {
      let parsed: { host: string; port: number };
      try {
        parsed = timed('splitHostPort', text, () => splitHostPort(text));
      } catch (error) {
        tally.add(error);
        assert.ok(error instanceof TypeError, `undocumented ${(error as Error).name}: ${(error as Error).message}`);
        return;
      }
      assert.ok(parsed.host.length > 0, 'a host');
      // \d{1,5}: the port can reach 99999 (parseAddress refuses it later, when the link is dialled).
      assert.ok(Number.isInteger(parsed.port) && parsed.port >= 0 && parsed.port <= 99_999, `port ${parsed.port}`);
      assert.deepEqual(splitHostPort(gatewayKey(parsed.host, parsed.port)), parsed, 'gatewayKey inverts it');
    }),
    { numRuns: runs(DEFAULT_RUNS) },
  );
  t.comment(`splitHostPort errors: ${tally.toString() || 'none'}`);
});
