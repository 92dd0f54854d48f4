/**
 * Device credentials from the command line:
 *
 *   npm run device:add <id>                  new device; prints its password (once)
 *   npm run device:add -- --replace <id>     new password for an existing device
 *   npm run device:add -- --remove <id>      delete a device (it can no longer connect), or an
 *                                            entry of devices.json whose id is invalid
 *   npm run device:add -- --list             every device id
 *
 * Only salted hashes are kept (in <dataDir>/devices.json); the running hub picks up changes
 * without a restart.
 */
import path from 'node:path';
import { addDevice, credentials, DeviceError, listDevices, removeDevice } from '../Applications/{{appName}}/credentials.ts';

const USAGE = 'usage: npm run device:add <id>   |   npm run device:add -- [--replace <id> | --remove <id> | --list]';

async function main(argv: string[]): Promise<number> {
  const flags = new Set(argv.filter((arg) => arg.startsWith('--')));
  const ids = argv.filter((arg) => !arg.startsWith('--'));
  const unknown = [...flags].filter((flag) => !['--replace', '--remove', '--list'].includes(flag));
  if (unknown.length > 0 || (flags.has('--list') ? ids.length !== 0 : ids.length !== 1) || (flags.has('--remove') && flags.has('--replace'))) {
    console.error(unknown.length > 0 ? `unknown option ${unknown[0]}; ${USAGE}` : USAGE);
    return 1;
  }
  const file = path.relative(process.cwd(), credentials.file) || credentials.file;
  // Invalid ids found in the file (a hand edit): one plain line each, not a log line.
  credentials.onWarning = (message) => console.error(`warning: ${message}`);

  if (flags.has('--list')) {
    const devices = await listDevices();
    if (devices.length === 0) console.log(`no devices yet (${file}); add one with npm run device:add <id>`);
    for (const { id, created } of devices) console.log(`${id}\t${created}`);
    return 0;
  }

  const [id] = ids;
  if (flags.has('--remove')) {
    if (!(await removeDevice(id))) {
      console.error(`no device ${id} in ${file}`);
      return 1;
    }
    console.log(`removed ${id} (its open connections stay until they close)`);
    return 0;
  }

  const password = await addDevice(id, { replace: flags.has('--replace') });
  const port = process.env.{{envPrefix}}MQTT_PORT || '{{mqttPort}}';
  console.log(`device:   ${id}`);
  console.log(`password: ${password}`);
  console.log(`(shown once: ${file} keeps only a hash of it)`);
  console.log(`try: mosquitto_pub -h localhost -p ${port} -i ${id} -u ${id} -P '${password}' -t devices/${id}/hello -m hi`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    // A bad or duplicate id, or an unreadable devices.json: one line, no stack.
    console.error(error instanceof DeviceError ? error.message : `device:add failed: ${(error as Error).message}`);
    process.exit(1);
  },
);
