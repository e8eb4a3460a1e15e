// The mailframe web console: a small ES module over the admin API. The token
// is kept in sessionStorage (this tab only); every page is built with DOM
// calls (no HTML strings), so nothing from the queue is ever parsed as markup.

const TOKEN_KEY = 'mailframe.adminToken';
const PAGE_SIZE = 50;
const LIVE_POLL_MS = 2000;

const $ = (id) => document.getElementById(id);

/** Build an element: h('td', { class: 'num' }, 'text', childNode, ...). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function say(text, error = false) {
  const s = $('status');
  s.textContent = text;
  s.className = error ? 'error' : '';
}

const token = () => sessionStorage.getItem(TOKEN_KEY);

class Unauthorized extends Error {}

/** Call the API; JSON in and out (or the raw Response with `raw`). */
async function api(path, { method = 'GET', body, raw = false } = {}) {
  const headers = { authorization: `Bearer ${token()}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) throw new Unauthorized('The token was refused.');
  if (raw && res.ok) return res;
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.message ?? `${res.status} ${res.statusText}`);
  return data;
}

// ---- formatting ---------------------------------------------------------------

function time(ms) {
  if (ms === undefined || ms === null) return '—';
  return new Date(ms)
    .toISOString()
    .replace('T', ' ')
    .replace(/:\d\d\.\d+Z$/, 'Z');
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function replyText(r) {
  return r ? `${r.code}${r.enhanced ? ` ${r.enhanced}` : ''} ${r.text}` : '—';
}

function stateCell(state) {
  return h('td', { class: `state state-${state}` }, state);
}

function table(headers, rows, caption) {
  return h(
    'table',
    {},
    caption ? h('caption', { class: 'visually-hidden' }, caption) : undefined,
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        headers.map(([text, cls]) => h('th', { scope: 'col', class: cls }, text)),
      ),
    ),
    h('tbody', {}, rows),
  );
}

function title(text) {
  return h('h2', { id: 'page-title' }, text);
}

// ---- queue actions ------------------------------------------------------------------

const ACTIONS = {
  hold: { label: 'Hold', done: 'Held' },
  release: { label: 'Release', done: 'Released' },
  retry: { label: 'Retry', done: 'Made due now:' },
  delete: { label: 'Delete', done: 'Deleted' },
};

async function act(action, id, after) {
  if (action === 'delete' && !confirm(`Delete message ${id} without delivering it?`)) return;
  try {
    if (action === 'delete') await api(`/api/queue/${encodeURIComponent(id)}`, { method: 'DELETE' });
    else await api(`/api/queue/${encodeURIComponent(id)}/${action}`, { method: 'POST' });
    say(`${ACTIONS[action].done} ${id}`);
  } catch (err) {
    return fail(err);
  }
  await after();
}

function actionButtons(m, after) {
  // A quarantined message (set aside by a policy action) is released like a held one.
  const held = m.state === 'held' || m.state === 'quarantined';
  const button = (action, cls) =>
    h(
      'button',
      { type: 'button', class: cls, 'data-action': action, onclick: () => act(action, m.id, after) },
      ACTIONS[action].label,
    );
  return [held ? button('release') : button('hold'), button('retry'), button('delete', 'danger')];
}

// ---- pages --------------------------------------------------------------------------

const queueView = { state: '', search: '', destination: '', offset: 0 };

async function queuePage(root) {
  const form = h(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'Filter the queue' },
    h(
      'div',
      {},
      h('label', { for: 'f-state' }, 'State'),
      h(
        'select',
        { id: 'f-state', name: 'state' },
        ['', 'active', 'deferred', 'held', 'quarantined'].map((s) =>
          h('option', { value: s, selected: s === queueView.state }, s === '' ? 'any' : s),
        ),
      ),
    ),
    h(
      'div',
      {},
      h('label', { for: 'f-search' }, 'Sender or recipient contains'),
      h('input', { id: 'f-search', name: 'search', type: 'search', value: queueView.search }),
    ),
    h(
      'div',
      {},
      h('label', { for: 'f-destination' }, 'Destination domain'),
      h('input', { id: 'f-destination', name: 'destination', type: 'search', value: queueView.destination }),
    ),
    h('button', { type: 'submit' }, 'Apply filters'),
  );
  const results = h('div', { id: 'queue-results' });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    queueView.state = String(data.get('state'));
    queueView.search = String(data.get('search')).trim();
    queueView.destination = String(data.get('destination')).trim();
    queueView.offset = 0;
    loadQueue(results);
  });
  root.replaceChildren(title('Queue'), form, results);
  await loadQueue(results);
}

/** The applied filter, as the bulk API takes it (empty: no filter set). */
function appliedFilter() {
  const f = {};
  for (const k of ['state', 'search', 'destination']) if (queueView[k]) f[k] = queueView[k];
  return f;
}

/** Actions on every message the applied filters match (the API refuses an empty filter). */
function bulkBar(page, after) {
  const filter = appliedFilter();
  if (Object.keys(filter).length === 0 || page.messages.length === 0)
    return h('p', { class: 'hint' }, 'Set a filter to act on every matching message at once.');
  const run = async (action) => {
    if (!confirm(`${ACTIONS[action].label}: every message matching the filters?`)) return;
    try {
      const r = await api('/api/queue/bulk', { method: 'POST', body: { action, filter } });
      say(`${ACTIONS[action].label}: ${r.done.length} of ${r.matched} matching messages`);
    } catch (err) {
      return fail(err);
    }
    await after();
  };
  return h(
    'div',
    { class: 'actions bulk', role: 'group', 'aria-label': 'Every matching message' },
    h('span', {}, 'Every matching message:'),
    ['hold', 'release', 'retry', 'delete'].map((action) =>
      h(
        'button',
        { type: 'button', class: action === 'delete' ? 'danger' : undefined, onclick: () => run(action) },
        `${ACTIONS[action].label} all`,
      ),
    ),
  );
}

async function loadQueue(results) {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(queueView.offset) });
  for (const k of ['state', 'search', 'destination']) if (queueView[k]) q.set(k, queueView[k]);
  let page;
  try {
    page = await api(`/api/queue?${q}`);
  } catch (err) {
    return fail(err);
  }
  const reload = () => loadQueue(results);
  const rows = page.messages.map((m) =>
    h(
      'tr',
      { 'data-id': m.id },
      h('td', {}, h('a', { href: `#message/${encodeURIComponent(m.id)}` }, h('code', {}, m.id))),
      h('td', {}, m.from === '' ? '<> (bounce)' : m.from),
      h('td', { class: 'nowrap' }, time(m.receivedAt)),
      h('td', { class: 'num nowrap' }, bytes(m.size)),
      stateCell(m.state),
      h('td', { class: 'num' }, `${m.pending} of ${m.recipients}`),
      h('td', { class: 'num' }, m.attempts),
      h('td', { class: 'nowrap' }, time(m.nextAttemptAt)),
      h('td', { class: 'reply' }, replyText(m.lastReply)),
      h('td', {}, h('div', { class: 'actions' }, actionButtons(m, reload))),
    ),
  );
  const pager = h(
    'div',
    { class: 'pager' },
    h(
      'button',
      {
        type: 'button',
        disabled: queueView.offset === 0,
        onclick: () => {
          queueView.offset = Math.max(0, queueView.offset - PAGE_SIZE);
          loadQueue(results);
        },
      },
      'Previous page',
    ),
    h(
      'span',
      {},
      page.messages.length === 0
        ? 'No messages match.'
        : `Messages ${page.offset + 1}–${page.offset + page.messages.length}`,
    ),
    h(
      'button',
      {
        type: 'button',
        disabled: page.nextOffset === null,
        onclick: () => {
          queueView.offset = page.nextOffset;
          loadQueue(results);
        },
      },
      'Next page',
    ),
  );
  results.replaceChildren(
    bulkBar(page, reload),
    table(
      [
        ['ID'],
        ['From'],
        ['Received'],
        ['Size', 'num'],
        ['State'],
        ['Pending', 'num'],
        ['Tries', 'num'],
        ['Next attempt'],
        ['Last reply'],
        ['Actions'],
      ],
      rows,
    ),
    pager,
  );
}

async function messagePage(root, id) {
  let m;
  try {
    m = await api(`/api/queue/${encodeURIComponent(id)}`);
  } catch (err) {
    root.replaceChildren(title(`Message ${id}`), h('p', {}, h('a', { href: '#queue' }, 'Back to the queue')));
    return fail(err);
  }
  const again = () => messagePage(root, id);
  const body = h('div', { id: 'message-body' });
  const showBody = h(
    'button',
    {
      type: 'button',
      onclick: async () => {
        try {
          const res = await api(`/api/queue/${encodeURIComponent(id)}/message`, { raw: true });
          body.replaceChildren(h('h3', {}, 'Message'), h('pre', {}, await res.text()));
          showBody.remove();
        } catch (err) {
          fail(err);
        }
      },
    },
    'Show the whole message',
  );
  const source = m.source
    ? Object.entries(m.source)
        .map(([k, v]) => `${k}: ${v}`)
        .join(', ')
    : '—';
  root.replaceChildren(
    title(`Message ${m.id}`),
    h('p', {}, h('a', { href: '#queue' }, 'Back to the queue')),
    h(
      'dl',
      {},
      h('dt', {}, 'From'),
      h('dd', {}, m.from === '' ? '<>' : m.from),
      h('dt', {}, 'State'),
      h('dd', { class: `state-${m.state}` }, m.state),
      h('dt', {}, 'Received'),
      h('dd', {}, time(m.receivedAt)),
      h('dt', {}, 'Size'),
      h('dd', {}, bytes(m.size)),
      h('dt', {}, 'Source'),
      h('dd', {}, source),
      h('dt', {}, 'Envelope'),
      h('dd', {}, h('code', {}, JSON.stringify(m.attributes))),
    ),
    h('div', { class: 'actions' }, actionButtons(m, again)),
    h('h3', {}, 'Recipients'),
    table(
      [
        ['Recipient'],
        ['Status'],
        ['Tries', 'num'],
        ['Last attempt'],
        ['Next attempt'],
        ['Last reply'],
        ['Remote host'],
      ],
      m.recipientStates.map((r) =>
        h(
          'tr',
          {},
          h('td', {}, r.address),
          stateCell(r.status),
          h('td', { class: 'num' }, r.attempts),
          h('td', {}, time(r.lastAttemptAt)),
          h('td', {}, r.status === 'pending' ? time(r.nextAttemptAt) : '—'),
          h('td', {}, replyText(r.reply)),
          h('td', {}, r.mta ? `${r.mta}${r.mtaAddress ? ` [${r.mtaAddress}]` : ''}` : '—'),
        ),
      ),
    ),
    h('h3', {}, 'Headers'),
    h('pre', {}, m.headers),
    showBody,
    body,
  );
}

let liveTimer;
let lastStats;

async function livePage(root) {
  const tiles = h('div', { class: 'tiles', 'aria-live': 'off' });
  const queue = h('div');
  root.replaceChildren(title('Live'), h('p', {}, `Updated every ${LIVE_POLL_MS / 1000} s.`), tiles, queue);
  const tile = (label, value) =>
    h('div', { class: 'tile' }, h('div', { class: 'value' }, value), h('div', { class: 'label' }, label));
  const poll = async () => {
    let s;
    try {
      s = await api('/api/stats');
    } catch (err) {
      return fail(err);
    }
    const dt = lastStats ? (s.at - lastStats.at) / 1000 : 0;
    const rate = (now, before) => (dt > 0 ? ((now - before) / dt).toFixed(2) : '—');
    tiles.replaceChildren(
      tile('Open connections', s.connections.open),
      tile('Connections since start', s.connections.total),
      tile(
        'Connections per second',
        lastStats ? rate(s.connections.total, lastStats.connections.total) : '—',
      ),
      tile('Messages accepted', s.messages.accepted),
      tile('Messages per second', lastStats ? rate(s.messages.accepted, lastStats.messages.accepted) : '—'),
      tile('Messages refused', s.messages.refused),
      tile('Octets accepted', bytes(s.messages.bytes)),
      tile('Ready', s.ready ? 'yes' : 'no'),
    );
    if (s.queue) {
      queue.replaceChildren(
        h('h3', {}, 'Queue'),
        h(
          'div',
          { class: 'tiles' },
          tile('Messages', s.queue.messages),
          tile('Deferred', s.queue.deferred),
          tile('Held', s.queue.held),
          tile('Being delivered', s.queue.active),
          tile('Recipients pending', s.queue.recipients.pending),
          tile('Oldest', time(s.queue.oldestReceivedAt)),
        ),
        h('h3', {}, 'Busiest destinations'),
        table(
          [['Destination'], ['Pending', 'num']],
          s.queue.destinations.map((d) =>
            h('tr', {}, h('td', {}, d.destination), h('td', { class: 'num' }, d.pending)),
          ),
        ),
      );
    }
    lastStats = s;
  };
  await poll();
  liveTimer = setInterval(poll, LIVE_POLL_MS);
}

async function pluginsPage(root) {
  let p;
  try {
    p = await api('/api/plugins');
  } catch (err) {
    return fail(err);
  }
  const num = (n, bad) => h('td', { class: n > 0 && bad ? 'num bad' : 'num' }, n);
  root.replaceChildren(
    title('Plugins'),
    h('p', {}, p.ready ? 'Every plugin started; the server is ready.' : 'The server is not ready.'),
    table(
      [
        ['Plugin'],
        ['Health'],
        ['Hook'],
        ['Calls', 'num'],
        ['Failures', 'num'],
        ['Timeouts', 'num'],
        ['Faults', 'num'],
      ],
      p.plugins.flatMap((pl) => [
        h(
          'tr',
          { 'data-plugin': pl.id },
          h('th', { scope: 'row' }, pl.id === pl.plugin ? pl.id : `${pl.id} (${pl.plugin})`),
          h('td', { class: pl.healthy ? 'ok' : 'bad' }, pl.healthy ? 'OK' : 'Problems'),
          h('td', {}, 'all'),
          num(pl.calls),
          num(pl.failures, true),
          num(pl.timeouts, true),
          num(pl.faults, true),
        ),
        ...pl.hooks.map((hk) =>
          h(
            'tr',
            {},
            h('td', {}),
            h('td', {}),
            h('td', {}, hk.hook),
            num(hk.calls),
            num(hk.failures, true),
            num(hk.timeouts, true),
            num(hk.faults, true),
          ),
        ),
      ]),
    ),
  );
}

// ---- navigation and sign-in ------------------------------------------------------------

function fail(err) {
  if (err instanceof Unauthorized) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn();
    say('The token was refused: sign in again.', true);
    return;
  }
  say(err instanceof Error ? err.message : String(err), true);
}

function showSignIn() {
  clearInterval(liveTimer);
  $('nav').hidden = true;
  $('page').replaceChildren();
  $('sign-in').hidden = false;
  $('token').focus();
}

async function route() {
  if (!token()) return showSignIn();
  clearInterval(liveTimer);
  lastStats = undefined;
  $('sign-in').hidden = true;
  $('nav').hidden = false;
  const [page, arg] = (location.hash.slice(1) || 'queue').split('/');
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const root = $('page');
  if (page === 'message' && arg) return messagePage(root, decodeURIComponent(arg));
  if (page === 'live') return livePage(root);
  if (page === 'plugins') return pluginsPage(root);
  return queuePage(root);
}

$('sign-in').addEventListener('submit', (e) => {
  e.preventDefault();
  const value = $('token').value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $('token').value = '';
  say('');
  route();
});
$('sign-out').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  say('Signed out.');
  showSignIn();
});
window.addEventListener('hashchange', () => route());
route();
