// mqtts:// with a certificate made here by the openssl CLI: mosquitto_sub and the mqtt npm client
// talk through TLS, and plain MQTT bytes on the TLS port are refused without harming anyone.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { freePorts } from './helpers.js';
import { mosquittoSub, mqttJs, startMqttApp } from './mqtt-helpers.js';

t.test('MQTT over TLS (mqtts://)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-mqtts-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  const [tlsInternal] = await freePorts(1);
  const broker = await startMqttApp(t, { TLS_CERT: cert, TLS_KEY: key, TLS_START_PORT: String(tlsInternal) });
  const tlsPort = broker.app.ports.TlsGateway;
  t.ok(tlsPort, `the mqtts gateway listens (${tlsPort})`);
  const ca = fs.readFileSync(cert);

  const sub = await mosquittoSub(t, tlsPort, ['--cafile', cert, '-V', 'mqttv311', '-t', 'secure/#', '-q', '1', '-C', '2']);
  const publisher = await mqttJs(t, `mqtts://127.0.0.1:${tlsPort}`, { protocolVersion: 5, ca, rejectUnauthorized: true });
  await publisher.pub('secure/a', 'over TLS', { qos: 1 });

  // Plain MQTT on the TLS port: that connection ends; the gateway goes on serving TLS clients.
  const plain = net.connect(tlsPort, '127.0.0.1');
  plain.on('error', () => {});
  plain.write(Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00]));
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 5000);
    plain.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  t.ok(closed, 'plain MQTT on the TLS port is closed');
  await publisher.pub('secure/b', 'still there', { qos: 1 });
  const got = await sub.messages.take(2, () => true, 5000, 'both messages');
  t.same(
    got.map((m) => [m.topic, m.payload, m.qos]),
    [
      ['secure/a', 'over TLS', 1],
      ['secure/b', 'still there', 1],
    ],
    // One subscriber connection got both: the gateway neither restarted nor dropped it.
    'mosquitto_sub over TLS got both messages from an mqtt.js client over TLS',
  );
});
