/**
 * mailframe inside an existing Node service: an HTTP API and an SMTP server in
 * one process. The SMTP server is built from a config object (no file), with a
 * plugin defined in this file that hands every accepted message to the
 * service; the HTTP side lists what arrived and reports the SMTP port.
 *
 *   In your project (mailframe installed):  node service.ts
 *   In this repository:                     node --conditions=mailframe-source examples/embedding/service.ts
 *
 * then `curl http://127.0.0.1:8080/health` and send mail to `anyone@inbox.test`.
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createServer, definePlugin, type MailServer, Replies, Stage } from 'mailframe';
import Type from 'typebox';

export interface InboxMessage {
  readonly id: string;
  readonly from: string;
  readonly to: readonly string[];
  readonly text: string;
}

/**
 * A plugin defined in code: accepts recipients at one domain and stores each
 * message with the service (here an array; a database in real life). The 250
 * goes out only once `store` resolved, so a message is never acknowledged
 * before the service has it.
 */
export function inboxPlugin(store: (m: InboxMessage) => Promise<void>) {
  return definePlugin({
    name: 'service-inbox',
    description: 'Accepts mail for one domain and hands it to the embedding service.',
    schema: Type.Object({ domain: Type.String({ minLength: 1 }) }, { additionalProperties: false }),
    register(api, config) {
      const domain = config.domain.toLowerCase();
      let seq = 0;
      api.hooks.rcpt.tap((_tx, to) => (to.address.asciiDomain === domain ? Replies.recipientOk : undefined), {
        stage: Stage.LATE,
      });
      api.hooks.queue.tap(
        async (tx, message) => {
          const id = `inbox-${++seq}`;
          await store({
            id,
            from: tx.from.address?.address ?? '',
            to: tx.recipients.map((r) => r.address.address),
            text: (await message.read(1024 * 1024)).toString('utf8'),
          });
          return { id };
        },
        { stage: Stage.LAST },
      );
    },
  });
}

export interface Service {
  readonly mail: MailServer;
  readonly http: HttpServer;
  readonly smtpPort: number;
  readonly httpPort: number;
  readonly inbox: readonly InboxMessage[];
  close(): Promise<void>;
}

export async function startService(opts: { smtpPort?: number; httpPort?: number; dataDir?: string } = {}) {
  const inbox: InboxMessage[] = [];
  // The config is the same object a mailframe.json holds; it is validated the same way.
  const mail = await createServer({
    config: {
      hostname: 'mx.inbox.test',
      dataDir: opts.dataDir ?? 'var',
      listeners: [{ name: 'smtp', host: '127.0.0.1', port: opts.smtpPort ?? 2525 }],
      plugins: [
        { plugin: 'enhanced-status-codes' },
        { plugin: 'pipelining' },
        { plugin: 'size' },
        { plugin: 'service-inbox', config: { domain: 'inbox.test' } },
      ],
    },
    plugins: [inboxPlugin(async (m) => void inbox.push(m))],
  });
  // createServer resolved: every plugin is loaded and every listener is bound.
  const smtpPort = mail.addresses()[0]?.port ?? 0;

  const http = createHttpServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url === '/health') res.end(JSON.stringify({ smtp: mail.addresses(), messages: inbox.length }));
    else if (req.url === '/messages') res.end(JSON.stringify(inbox));
    else res.writeHead(404).end('{}');
  });
  await new Promise<void>((ok) => http.listen(opts.httpPort ?? 8080, '127.0.0.1', ok));

  const service: Service = {
    mail,
    http,
    smtpPort,
    httpPort: (http.address() as AddressInfo).port,
    inbox,
    async close() {
      await new Promise<void>((ok) => http.close(() => ok()));
      await mail.close(); // graceful: open transactions finish, then plugins close
    },
  };
  return service;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const service = await startService();
  console.log(`SMTP on 127.0.0.1:${service.smtpPort}, HTTP on http://127.0.0.1:${service.httpPort}/health`);
  const stop = () => void service.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
