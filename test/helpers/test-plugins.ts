/**
 * Small plugins that tests put beside the ones under test: one that reads a
 * policy check's results once every check has run, and one that stands in
 * for a successful AUTH.
 */
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { type CheckName, type PolicyChecks, resultsOf } from '../../plugins/policy/policy.ts';

/** Hands `check`'s results to `see` on the message hook at `Stage.LAST` (after the checks recorded them). */
export function resultsProbe<K extends CheckName>(
  check: K,
  see: (results: readonly PolicyChecks[K][]) => void,
) {
  return definePlugin({
    name: `test-probe-${check}`,
    schema: Type.Object({}),
    register(api) {
      api.hooks.message.tap(
        (tx) => {
          see(resultsOf(tx, check));
          return undefined;
        },
        { stage: Stage.LAST },
      );
    },
  });
}

/** Marks every session authenticated as `user` at EHLO, as the auth plugin would after a good AUTH. */
export function loggedInAs(user: string) {
  return definePlugin({
    name: 'test-logged-in',
    schema: Type.Object({}),
    register(api) {
      api.hooks.ehlo.tap((session) => {
        session.authenticate(user);
        return undefined;
      });
    },
  });
}
