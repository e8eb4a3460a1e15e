/** nodemailer set up the way the e2e tests use it: as `client.example`, to a loopback test server. */
import { createTransport, type SendMailOptions, type Transporter } from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport';

/** A transport to `server` in clear text: STARTTLS is ignored even when offered. Close it when done. */
export function plainTransport(server: {
  readonly host: string;
  readonly port: number;
}): Transporter<SMTPTransport.SentMessageInfo> {
  return createTransport({
    host: server.host,
    port: server.port,
    secure: false,
    ignoreTLS: true,
    name: 'client.example',
  });
}

/**
 * Send one message to 127.0.0.1:`port` over STARTTLS (required; the test
 * certificate is not checked), optionally authenticating with `login`, and
 * close the transport.
 */
export async function sendOverStartTls(
  port: number,
  mail: SendMailOptions,
  login?: Pick<SMTPTransport.Options, 'auth' | 'authMethod'>,
): Promise<SMTPTransport.SentMessageInfo> {
  const transport = createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    requireTLS: true,
    name: 'client.example',
    tls: { rejectUnauthorized: false },
    ...login,
  });
  try {
    return await transport.sendMail(mail);
  } finally {
    transport.close();
  }
}
