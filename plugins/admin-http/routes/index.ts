/**
 * Every route of the admin API, in the order the docs list them. A new
 * endpoint is a module beside these exporting its routes, added to this list.
 */
import type { AdminRoute } from '../route.ts';
import { configRoutes } from './config.ts';
import { healthRoutes } from './health.ts';
import { pluginRoutes } from './plugins.ts';
import { queueRoutes } from './queue.ts';
import { reloadRoutes } from './reload.ts';
import { statsRoutes } from './stats.ts';

export const ROUTES: readonly AdminRoute[] = [
  ...healthRoutes,
  ...queueRoutes,
  ...statsRoutes,
  ...configRoutes,
  ...pluginRoutes,
  ...reloadRoutes,
];
