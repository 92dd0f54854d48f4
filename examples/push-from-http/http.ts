// A separate web app: POST /push/<group> with a body broadcasts the body to that group.
//   curl -d 'hello' http://127.0.0.1:8080/push/news
import http from 'node:http';
import { GatewayClient } from 'gatewayworker';

const gateway = new GatewayClient({
  registerAddress: process.env.REGISTER_ADDRESS ?? '127.0.0.1:1238',
  secretKey: process.env.SECRET_KEY ?? 'change-me',
});

const server = http.createServer(async (request, response) => {
  const match = /^\/push\/([\w-]+)$/.exec(request.url ?? '');
  if (request.method !== 'POST' || !match) {
    response.writeHead(404).end('POST /push/<group>\n');
    return;
  }
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  const group = match[1];
  await gateway.sendToGroup(group, Buffer.concat(chunks).toString());
  const members = await gateway.getClientIdCountByGroup(group);
  response.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ group, members }) + '\n');
});

server.listen(Number(process.env.HTTP_PORT ?? 8080), () => console.log(`push endpoint on http://127.0.0.1:${process.env.HTTP_PORT ?? 8080}/push/<group>`));
process.on('SIGINT', () => {
  gateway.close();
  server.close();
});
