/**
 * The web console in real headless Chromium (Debian's `chromium`, installed
 * by the global setup; driven by playwright-core, which never downloads a
 * browser): sign in, filter the queue, hold a deferred message and release
 * it, and see its state change in the page. A screenshot goes to the test's
 * temporary directory; with MAILFRAME_DOCS_SCREENSHOT=1 one is also written
 * to docs/images/console-queue.png (never during normal runs).
 */
import { copyFile, mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type BrowserContext, chromium } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { withDeferredMail } from './admin-harness.ts';
import { useQueueScope } from './queue-harness.ts';

const scope = useQueueScope();
const CHROMIUM = '/usr/bin/chromium';
const DOCS_SCREENSHOT = join(import.meta.dirname, '../../docs/images/console-queue.png');

async function browser(userDataDir: string): Promise<BrowserContext> {
  try {
    await stat(CHROMIUM);
  } catch {
    throw new Error(
      `${CHROMIUM} is missing: the global setup installs Debian's chromium (test/system-packages.ts)`,
    );
  }
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
    viewport: { width: 1360, height: 520 },
    colorScheme: 'light',
    timeout: 60_000,
  });
  context.setDefaultTimeout(15_000);
  return context;
}

describe('web console (headless Chromium)', () => {
  it('filters the queue, holds a message and releases it, the page showing each state', async () => {
    const t = await withDeferredMail(scope);
    const { a, b, c } = t;

    const out = await scope.tempDir();
    const context = await browser(join(out, 'profile'));
    try {
      const page = await context.newPage();
      const problems: string[] = [];
      page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
      page.on('console', (m) => {
        if (m.type() === 'error') problems.push(`console: ${m.text()}`);
      });
      // The browser talks to the console's own server only.
      page.on('request', (r) => {
        if (!r.url().startsWith(t.base)) problems.push(`request elsewhere: ${r.url()}`);
      });

      await page.goto(`${t.base}/`);
      await page.getByLabel('API token').fill(t.token);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await expect.poll(() => page.locator('#sign-in').isVisible()).toBe(false);
      // The token is kept for this tab only.
      expect(await page.evaluate(() => sessionStorage.getItem('mailframe.adminToken'))).toBe(t.token);
      expect(await page.evaluate(() => localStorage.length)).toBe(0);

      const rows = page.locator('#queue-results tbody tr');
      await expect
        .poll(() => rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-id'))))
        .toEqual([a, b, c]);
      await expect
        .poll(() => rows.locator('td.state').allTextContents())
        .toEqual(['deferred', 'deferred', 'deferred']);

      // Filter: only dave's message is left.
      await page.getByLabel('Sender or recipient contains').fill('dave');
      await page.getByRole('button', { name: 'Apply filters' }).click();
      await expect
        .poll(() => rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-id'))))
        .toEqual([b]);

      const row = page.locator(`tr[data-id="${b}"]`);
      await row.getByRole('button', { name: 'Hold' }).click();
      await expect.poll(() => row.locator('td.state').textContent()).toBe('held');
      await expect.poll(() => page.locator('#status').textContent()).toBe(`Held ${b}`);
      expect((await t.s.queue.list({ state: 'held' })).map((m) => m.id)).toEqual([b]);
      await page.screenshot({ path: join(out, 'console-queue-held.png') });

      await row.getByRole('button', { name: 'Release' }).click();
      await expect.poll(() => row.locator('td.state').textContent()).toBe('deferred');
      expect(await t.s.queue.list({ state: 'held' })).toEqual([]);

      // The whole queue again, b held, for the screenshot.
      await page.getByLabel('Sender or recipient contains').fill('');
      await page.getByRole('button', { name: 'Apply filters' }).click();
      await expect.poll(() => rows.count()).toBe(3);
      await row.getByRole('button', { name: 'Hold' }).click();
      await expect.poll(() => row.locator('td.state').textContent()).toBe('held');
      const shot = join(out, 'console-queue.png');
      await page.screenshot({ path: shot });
      expect((await stat(shot)).size).toBeGreaterThan(10_000);
      if (process.env['MAILFRAME_DOCS_SCREENSHOT'] === '1') {
        await mkdir(join(DOCS_SCREENSHOT, '..'), { recursive: true });
        await copyFile(shot, DOCS_SCREENSHOT);
      }

      // Bulk by filter: every message with a recipient at example.com, after a confirmation.
      await page.getByRole('button', { name: 'Release' }).click();
      await expect.poll(() => row.locator('td.state').textContent()).toBe('deferred');
      await page.getByLabel('Destination domain').fill('example.com');
      await page.getByRole('button', { name: 'Apply filters' }).click();
      await expect
        .poll(() => rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-id'))))
        .toEqual([a, b]);
      page.once('dialog', (d) => void d.accept());
      await page.getByRole('button', { name: 'Hold all' }).click();
      await expect.poll(() => rows.locator('td.state').allTextContents()).toEqual(['held', 'held']);
      expect(await page.locator('#status').textContent()).toBe('Hold: 2 of 2 matching messages');
      expect((await t.s.queue.list({ state: 'held' })).map((m) => m.id)).toEqual([a, b]);

      // Message detail: recipients with their attempts; the body only on request.
      await page.locator(`tr[data-id="${a}"] a`).click();
      await expect.poll(() => page.locator('#page-title').textContent()).toBe(`Message ${a}`);
      const recipients = page.locator('table tbody tr');
      await expect
        .poll(() => recipients.locator('td:first-child').allTextContents())
        .toEqual(['bob@example.com', 'carol@example.org']);
      expect(await recipients.first().locator('td').nth(5).textContent()).toBe('451 4.3.0 not now');
      expect(await page.locator('#message-body').textContent()).toBe('');
      await page.getByRole('button', { name: 'Show the whole message' }).click();
      await expect.poll(() => page.locator('#message-body pre').textContent()).toContain('Hello.');

      // Live view and plugin health render from the API.
      await page.getByRole('link', { name: 'Live' }).click();
      await expect.poll(() => page.locator('.tile').first().textContent()).toBe('0Open connections');
      await page.getByRole('link', { name: 'Plugins' }).click();
      await expect.poll(() => page.locator('tr[data-plugin="queue-fs"] td').first().textContent()).toBe('OK');

      expect(problems).toEqual([]);
    } finally {
      await context.close();
    }
  }, 120_000);
});
