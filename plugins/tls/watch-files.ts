/**
 * Watch files for changes, debounced. The directories are watched rather than
 * the files, so replacing a file by renaming a new one over it (as certificate
 * tools and Kubernetes secret mounts do) is seen too.
 */
import { type FSWatcher, watch } from 'node:fs';
import { dirname } from 'node:path';

export interface FileWatch {
  close(): void;
}

export function watchFiles(
  paths: readonly string[],
  delayMs: number,
  onChange: () => void,
  onError: (err: Error, dir: string) => void,
): FileWatch {
  let timer: NodeJS.Timeout | undefined;
  const fire = () => {
    clearTimeout(timer);
    timer = setTimeout(onChange, delayMs);
    timer.unref();
  };
  const watchers: FSWatcher[] = [];
  for (const dir of new Set(paths.map((p) => dirname(p)))) {
    try {
      const w = watch(dir, { persistent: false }, fire);
      w.on('error', (err) => onError(err, dir));
      watchers.push(w);
    } catch (err) {
      onError(err instanceof Error ? err : new Error(String(err)), dir);
    }
  }
  return {
    close() {
      clearTimeout(timer);
      for (const w of watchers) w.close();
    },
  };
}
