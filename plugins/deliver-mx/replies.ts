/**
 * The replies deliver-mx reports when the failure is found on this side
 * (resolution, policy, back-off) rather than in a remote server's answer.
 * They go into delivery results and bounces, never onto the wire.
 */
import { type Reply, reply } from '../../core/reply.ts';

export const MxReplies = Object.freeze({
  /** RFC 7505 3.2 / RFC 7504: the domain publishes a null MX, it accepts no mail. */
  nullMx: (domain: string): Reply => reply(556, '5.1.10', `Domain ${domain} accepts no mail (null MX)`),
  noSuchDomain: (domain: string): Reply => reply(550, '5.1.2', `Domain ${domain} does not exist`),
  dnsTemporary: (name: string, type: string, why: string): Reply =>
    reply(451, '4.4.3', `DNS lookup of ${type} for ${name} failed for now (${why})`),
  noAddress: (domain: string): Reply =>
    reply(550, '5.4.4', `No address found for any mail exchanger of ${domain}`),
  /** RFC 5321 5.1: this host is the best mail exchanger left, delivering would loop. */
  loopsBack: (domain: string): Reply =>
    reply(554, '5.4.6', `Mail for ${domain} loops back to this host (MX lists this host)`),
  literalsDisabled: (literal: string): Reply =>
    reply(550, '5.1.2', `Delivery to address literal ${literal} is not enabled`),
  badLiteral: (literal: string): Reply =>
    reply(550, '5.1.2', `Address literal ${literal} cannot be delivered to`),
  backingOff: (domain: string, until: string): Reply =>
    reply(451, '4.4.1', `Destination ${domain} is unreachable for now; not trying before ${until}`),
});
