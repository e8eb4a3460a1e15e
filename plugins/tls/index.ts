/**
 * TLS for the server: STARTTLS (RFC 3207) on plain listeners and the
 * certificates for implicit-TLS listeners (RFC 8314, port 465) through the
 * `tls` service. Certificates reload on SIGHUP and when their files change.
 */
import Type, { type Static } from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin, type TlsProvider } from '../../core/plugin.ts';
import type { Session } from '../../core/types.ts';
import { type CertificateSettings, CertificateStore, type CertificateSummary } from './certificate-store.ts';
import { createSelfSignedCertificate } from './self-signed.ts';
import { starttlsVerb } from './starttls-verb.ts';
import { watchFiles } from './watch-files.ts';

export { CertificateStore } from './certificate-store.ts';
export { createSelfSignedCertificate } from './self-signed.ts';

const CertificatePair = Type.Object(
  {
    cert: Type.String({ minLength: 1, description: 'PEM certificate chain file for this name.' }),
    key: Type.String({ minLength: 1, description: 'PEM private key file for this name.' }),
  },
  { additionalProperties: false },
);

export const schema = Type.Object(
  {
    cert: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'PEM certificate chain file (server certificate first, then intermediates), relative to the working directory. Required unless `selfSigned`.',
      }),
    ),
    key: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'PEM private key file for `cert`, relative to the working directory.',
      }),
    ),
    selfSigned: Type.Boolean({
      default: false,
      description:
        'Without `cert` and `key`: make a throwaway self-signed certificate for the server host name at start-up, in memory. For trying things out only: clients cannot verify it.',
    }),
    sni: Type.Optional(
      Type.Record(Type.String(), CertificatePair, {
        description:
          'Other certificates by the server name clients ask for (SNI), e.g. `{ "mail.example.org": { "cert": ..., "key": ... } }`. `*.example.org` matches one label. Unknown names get `cert`.',
      }),
    ),
    minVersion: Type.Union([Type.Literal('TLSv1.2'), Type.Literal('TLSv1.3')], {
      default: 'TLSv1.2',
      description: 'Oldest TLS version accepted (RFC 8314 section 4.1 asks for TLS 1.2 or later).',
    }),
    ciphers: Type.Optional(
      Type.String({
        minLength: 1,
        description: "OpenSSL cipher list for TLS 1.2 (default: Node's). TLS 1.3 suites are not affected.",
      }),
    ),
    advertise: Type.Boolean({
      default: true,
      description:
        'Offer STARTTLS: advertise it in EHLO and accept the command. Off: only implicit-TLS listeners use the certificates.',
    }),
    watch: Type.Boolean({
      default: true,
      description: 'Reload the certificates when their files change.',
    }),
    watchDelay: Type.Integer({
      minimum: 0,
      default: 500,
      description: 'Milliseconds to wait after the last file change before reloading (lets both files land).',
    }),
    reloadOnSighup: Type.Boolean({ default: true, description: 'Reload the certificates on SIGHUP.' }),
  },
  { additionalProperties: false },
);

/** The `tls` service this plugin provides: the provider the core uses, and the store behind it. */
export interface TlsService extends TlsProvider {
  readonly certificates: CertificateStore;
}

/** The certificate store behind a `tls` service, when the service comes from this plugin (tests, tools). */
export function certificateStoreOf(provider: TlsProvider | undefined): CertificateStore | undefined {
  const store = (provider as Partial<TlsService> | undefined)?.certificates;
  return store instanceof CertificateStore ? store : undefined;
}

type Config = Static<typeof schema>;

function certificateSettings(config: Config, hostname: string): CertificateSettings {
  const common = {
    minVersion: config.minVersion,
    ...(config.sni === undefined ? {} : { sni: config.sni }),
    ...(config.ciphers === undefined ? {} : { ciphers: config.ciphers }),
  };
  if (config.cert !== undefined && config.key !== undefined) {
    return { ...common, default: { cert: config.cert, key: config.key } };
  }
  if (config.cert !== undefined || config.key !== undefined) {
    throw new Error('tls: set both "cert" and "key"');
  }
  if (!config.selfSigned) {
    throw new Error('tls: set "cert" and "key" (or "selfSigned": true for a throwaway test certificate)');
  }
  return { ...common, default: { inline: createSelfSignedCertificate(hostname) } };
}

function describeCerts(summaries: readonly CertificateSummary[]) {
  return summaries.map((s) => ({
    name: s.name,
    subject: s.subject,
    fingerprint256: s.fingerprint256,
    validTo: s.validTo.toISOString(),
  }));
}

export default definePlugin({
  name: 'tls',
  description: 'STARTTLS (RFC 3207) and certificates for implicit TLS (RFC 8314), reloaded on change.',
  schema,
  async register(api, config) {
    const store = await CertificateStore.open(certificateSettings(config, api.server.hostname));
    const log = api.log;
    log.info({ certificates: describeCerts(store.summaries) }, 'certificates loaded');
    if (config.cert === undefined) {
      log.warn('using a throwaway self-signed certificate (selfSigned): clients cannot verify it');
    }
    const warnExpiry = (summaries: readonly CertificateSummary[]) => {
      const soon = api.server.clock.now() + 7 * 24 * 3600 * 1000;
      for (const s of summaries) {
        if (s.validTo.getTime() < soon) {
          log.warn({ name: s.name, validTo: s.validTo.toISOString() }, 'certificate expires within 7 days');
        }
      }
    };
    warnExpiry(store.summaries);
    store.on('reloaded', (summaries) => {
      log.info({ certificates: describeCerts(summaries) }, 'certificates reloaded');
      warnExpiry(summaries);
    });
    store.on('reloadFailed', (err) => {
      log.error({ err: err.message }, 'certificate reload failed; keeping the previous certificates');
    });

    const service: TlsService = {
      certificates: store,
      serverOptions: () => store.serverOptions(),
    };
    api.provide('tls', service);

    // Sessions this plugin instance serves (its `listeners` scope): the connect hook only fires for those.
    const served = new WeakSet<Session>();
    api.hooks.connect.tap(
      (session) => {
        served.add(session);
        return undefined;
      },
      { stage: Stage.FIRST },
    );

    if (config.advertise) {
      api.registerVerb(starttlsVerb(store, (s) => served.has(s)));
      api.hooks.capabilities.tap((keywords, session) => {
        // RFC 3207 section 4.2: never offered again once TLS is in effect.
        if (!session.tls) keywords.push('STARTTLS');
        return keywords;
      });
    }

    if (config.watch) {
      const watcher = watchFiles(
        store.files,
        config.watchDelay,
        () => void store.reload(),
        (err, dir) => log.error({ err: err.message, dir }, 'cannot watch certificate directory'),
      );
      api.onClose(() => watcher.close());
    }
    if (config.reloadOnSighup) {
      const onHup = () => {
        log.info('SIGHUP: reloading certificates');
        void store.reload();
      };
      process.on('SIGHUP', onHup);
      api.onClose(() => {
        process.off('SIGHUP', onHup);
      });
    }
    api.onClose(() => {
      store.removeAllListeners();
    });
  },
});
