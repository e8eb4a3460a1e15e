/**
 * Delivery to the Internet by MX (RFC 5321 section 5): resolves each
 * destination with the server's DNS resolver, keeps a pool of connections per
 * destination with limits, slow start and back-off, and applies a TLS policy
 * per destination. Claims jobs routed to it, and unrouted jobs whose domain
 * matches `domains`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { definePlugin } from '../../core/plugin.ts';
import { clientTimeouts } from '../outbound/client-schema.ts';
import { claims, domainMatcher } from '../outbound/routing.ts';
import { MxDelivery } from './deliver.ts';
import { MtaStsPolicies } from './mta-sts.ts';
import { ConnectionPool } from './pool.ts';
import { normalName } from './resolve.ts';
import { schema } from './schema.ts';
import { TlsPolicies } from './tls-policy.ts';

export { schema };

export default definePlugin({
  name: 'deliver-mx',
  description:
    'Delivers to the Internet by MX: RFC 5321 routing, null MX, pooled connections per destination, TLS policies (DANE, MTA-STS, table).',
  schema,
  async register(api, config) {
    const pool = new ConnectionPool(
      {
        perDestination: config.perDestination,
        total: config.concurrency,
        initialConcurrency: config.initialConcurrency,
        maxMessagesPerConnection: config.maxMessagesPerConnection,
        idleTimeout: config.idleTimeout,
        maxIdle: config.maxIdle,
        failureThreshold: config.failureThreshold,
        backoff: config.backoff,
        rateDelay: config.rateDelay,
      },
      api.server.clock,
    );
    const heloName = config.heloName ?? api.server.hostname;
    let mtaSts: MtaStsPolicies | undefined;
    if (config.mtaSts.enabled) {
      mtaSts = new MtaStsPolicies({
        dns: api.server.dns,
        clock: api.server.clock,
        file: join(api.server.dataDir, api.name, 'mta-sts.json'),
        ca: config.mtaSts.caFile === undefined ? undefined : await readFile(config.mtaSts.caFile),
        port: config.mtaSts.port,
        timeout: config.mtaSts.timeout,
        log: api.log,
      });
      await mtaSts.load();
    }
    const policies = new TlsPolicies({
      table: config.tlsPolicies,
      fallback: config.tlsPolicy,
      dns: api.server.dns,
      ca: config.caFile === undefined ? undefined : await readFile(config.caFile),
      dane: config.dane,
      mtaSts,
      clock: api.server.clock,
    });
    const delivery = new MxDelivery({
      dns: api.server.dns,
      pool,
      port: config.port,
      heloName,
      sources: config.sources.map((s) => ({ address: s.address, heloName: s.heloName ?? heloName })),
      localNames: new Set([api.server.hostname, ...config.localNames].map(normalName)),
      literals: config.addressLiterals,
      families: config.addressFamilies,
      maxRecipients: config.maxRecipients,
      policies,
      tlsReport: () => api.service('tlsReport'),
      chunking: config.chunking,
      timeouts: clientTimeouts(config.timeouts),
      clock: api.server.clock,
    });
    const matches = domainMatcher(config.domains);
    api.hooks.deliver.tap((job) => {
      if (!claims(api.name, matches, job)) return undefined;
      return delivery.deliver(job);
    });
    api.onClose(() => pool.close());
  },
});
