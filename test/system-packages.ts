/**
 * The Debian packages the tests need as real peers (an independent DKIM
 * implementation, rspamd, a browser, ...), installed once per run by the
 * global setup before any test file starts, so test files never race each
 * other for apt's locks. Add a package here, not in a test file.
 *
 * Installing needs root and Debian's apt-get (CI and the development
 * machines have both). When a package cannot be had, the run fails with the
 * reason: tests that need a peer never skip.
 */
import { execFileSync } from 'node:child_process';

/** Every Debian package a test uses, and what for. */
export const SYSTEM_PACKAGES: Readonly<Record<string, string>> = {
  'python3-dkim': 'DKIM interoperability (dkimverify/dkimsign), test/helpers/python-dkim.ts',
  rspamd: 'the content scanner the rspamd plugin talks to, test/helpers/rspamd.ts',
  chromium: 'the web console in a real browser (driven by playwright-core), test/e2e/admin-console.test.ts',
  'fonts-dejavu-core': "a font for the console's screenshots, test/e2e/admin-console.test.ts",
  openssl:
    'test certificates: a test CA, leaf certificates it issues (expired ones too), test/helpers/certs.ts and deliver-helpers.ts',
};

function installed(pkg: string): boolean {
  try {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
    const status = execFileSync('dpkg-query', ['-W', '-f=${Status}', pkg], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return status.toString().trim() === 'install ok installed';
  } catch {
    return false;
  }
}

/** Install the packages of `SYSTEM_PACKAGES` that are missing; throws why when that fails. */
export function ensureSystemPackages(packages: readonly string[] = Object.keys(SYSTEM_PACKAGES)): void {
  const missing = packages.filter((pkg) => !installed(pkg));
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0)
    throw new Error(`the tests need Debian packages ${missing.join(', ')}; installing them needs root`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = (args: string[]) =>
    execFileSync('apt-get', ['-o', 'DPkg::Lock::Timeout=600', ...args], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
      maxBuffer: 64 * 1024 * 1024,
    });
  try {
    apt(['update']);
    apt(['install', '-y', '--no-install-recommends', ...missing]);
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(
      `could not install ${missing.join(', ')} with apt-get: ${(err as Error).message}\n${stderr}`,
    );
  }
  const still = missing.filter((pkg) => !installed(pkg));
  if (still.length > 0) throw new Error(`apt-get finished but ${still.join(', ')} is not installed`);
}
