// The server side: Register, a WebSocket gateway on :7380 and one BusinessWorker.
// Clients connect to ws://127.0.0.1:7380/?group=news and are put in that group.
import { BusinessWorker, Gateway, Register, Worker } from 'gatewayworker';

const registerAddress = process.env.REGISTER_ADDRESS ?? '127.0.0.1:1238';
const secretKey = process.env.SECRET_KEY ?? 'change-me';

new Register(`text://${registerAddress}`, { secretKey });
new Gateway(`websocket://0.0.0.0:${process.env.GATEWAY_PORT ?? 7380}`, {
  name: 'PushGateway',
  startPort: Number(process.env.START_PORT ?? 3100),
  registerAddress,
  secretKey,
});
new BusinessWorker({
  name: 'PushWorker',
  registerAddress,
  secretKey,
  eventHandler: {
    async onWebSocketConnect(clientId, request) {
      await Gateway.joinGroup(clientId, request.query.group || 'news');
    },
    onMessage() {},
  },
});

Worker.runAll();
