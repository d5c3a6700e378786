// ocfcloud portal: a single-page app without a build step. It signs in with
// the authorization code flow and PKCE, keeps tokens in sessionStorage (never
// in URLs or localStorage), and renders each screen from the REST APIs.

const cfg = await (await fetch('/portal/config.json')).json();
const main = document.getElementById('main');
const store = window.sessionStorage;

// ---------- small DOM helpers ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// fill replaces el's children, skipping the null/false that conditional
// parts leave behind.
function fill(el, ...nodes) {
  el.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
}

function show(...nodes) {
  fill(main, ...nodes);
}

function errorBox(err) {
  return h('p', { class: 'error', role: 'alert' }, err instanceof Error ? err.message : String(err));
}

function copyButton(text, label) {
  return h('button', {
    type: 'button', class: 'secondary', 'aria-label': 'Copy ' + label,
    onclick: async (ev) => {
      try {
        await navigator.clipboard.writeText(text);
        ev.target.textContent = 'Copied';
      } catch {
        ev.target.textContent = 'Select and copy';
      }
      setTimeout(() => { ev.target.textContent = 'Copy'; }, 1500);
    },
  }, 'Copy');
}

function field(label, value, { copy = true, code = true } = {}) {
  return [
    h('dt', {}, label),
    h('dd', {}, code ? h('code', {}, value ?? '') : String(value ?? ''), copy && value ? copyButton(value, label) : null),
  ];
}

function when(t) {
  if (!t) return '—';
  const d = new Date(t);
  return isNaN(d) || d.getFullYear() < 2000 ? '—' : d.toLocaleString();
}

// ---------- OAuth 2.0 authorization code + PKCE ----------

function b64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomString(n = 32) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

const redirectURI = window.location.origin + '/';

async function signIn() {
  const verifier = randomString(48);
  const state = randomString(16);
  const nonce = randomString(16);
  const challenge = b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
  store.setItem('pkce', JSON.stringify({ verifier, state, nonce, back: window.location.hash || '#/devices' }));
  const q = new URLSearchParams({
    response_type: 'code', client_id: cfg.clientId, redirect_uri: redirectURI, scope: cfg.scopes,
    state, nonce, code_challenge: challenge, code_challenge_method: 'S256',
  });
  window.location.assign(cfg.issuer + '/oauth/authorize?' + q.toString());
}

async function tokenRequest(form) {
  const resp = await fetch('/oauth/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error_description || body.error || ('token endpoint answered ' + resp.status));
  store.setItem('tokens', JSON.stringify({
    access: body.access_token, refresh: body.refresh_token || '',
    expires: Date.now() + (body.expires_in || 60) * 1000,
  }));
}

// finishSignIn handles the redirect back from authz: ?code&state&iss.
async function finishSignIn() {
  const params = new URLSearchParams(window.location.search);
  if (!params.has('code') && !params.has('error')) return false;
  const saved = JSON.parse(store.getItem('pkce') || '{}');
  store.removeItem('pkce');
  // Remove the code from the address bar and history at once.
  window.history.replaceState(null, '', '/' + (saved.back || '#/devices'));
  if (params.get('error')) throw new Error('Sign-in was not completed: ' + (params.get('error_description') || params.get('error')));
  if (!saved.state || params.get('state') !== saved.state) throw new Error('Sign-in answer does not match this browser session; please sign in again.');
  if (params.has('iss') && params.get('iss') !== cfg.issuer) throw new Error('Sign-in answer came from an unexpected issuer.');
  await tokenRequest({
    grant_type: 'authorization_code', code: params.get('code'), redirect_uri: redirectURI,
    client_id: cfg.clientId, code_verifier: saved.verifier,
  });
  return true;
}

function tokens() {
  return JSON.parse(store.getItem('tokens') || 'null');
}

async function accessToken() {
  const t = tokens();
  if (!t) return null;
  if (Date.now() < t.expires - 30000) return t.access;
  if (!t.refresh) return null;
  try {
    await tokenRequest({ grant_type: 'refresh_token', refresh_token: t.refresh, client_id: cfg.clientId });
    return tokens().access;
  } catch {
    store.removeItem('tokens');
    return null;
  }
}

async function signOut() {
  const t = tokens();
  store.removeItem('tokens');
  if (t) {
    const revoke = (token) => fetch('/oauth/revoke', {
      method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token, client_id: cfg.clientId }).toString(),
    }).catch(() => {});
    if (t.refresh) await revoke(t.refresh);
    await revoke(t.access);
  }
  window.location.assign('/');
}

// api calls the REST API with the Bearer token; problems become Errors with
// the server's own explanation.
async function api(method, path, body) {
  const token = await accessToken();
  if (!token) {
    await signIn();
    throw new Error('Signing in…');
  }
  const opts = { method, headers: { Authorization: 'Bearer ' + token } };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  if (resp.status === 401) {
    store.removeItem('tokens');
    await signIn();
    throw new Error('Your session ended; signing in again…');
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) {
    const msg = (data && (data.detail || data.error_description || data.title)) || (resp.status + ' ' + resp.statusText);
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return { data, headers: resp.headers, status: resp.status };
}

// ---------- screens ----------

let me = null;
let poller = null;

async function devicesView(params) {
  const top = 20;
  const skip = Math.max(0, parseInt(params.get('skip') || '0', 10) || 0);
  const q = params.get('q') || '';
  const search = h('form', {
    class: 'inline', role: 'search',
    onsubmit: (ev) => {
      ev.preventDefault();
      const v = ev.target.elements.q.value.trim();
      window.location.hash = '#/devices' + (v ? '?q=' + encodeURIComponent(v) : '');
    },
  },
  h('div', {}, h('label', { for: 'q' }, 'Search by name'), h('input', { id: 'q', name: 'q', value: q, type: 'search' })),
  h('button', { type: 'submit' }, 'Search'));
  const body = h('tbody');
  const status = h('div', { 'aria-live': 'polite' });
  const pager = h('div', { class: 'pager' });
  const admin = me && me.role === 'admin';
  show(h('h1', {}, 'Devices'), search, status,
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Device ID'), h('th', {}, 'Types'), h('th', {}, 'Status'), admin ? h('th', {}, 'Owner') : null)), body),
    pager);

  async function load() {
    const p = new URLSearchParams({ $count: 'true', $top: String(top), $skip: String(skip) });
    if (q) p.set('$filter', "contains(name,'" + q.replace(/'/g, "''") + "')");
    try {
      const { data } = await api('GET', '/api/v1/devices?' + p.toString());
      fill(body, ...data.value.map((d) => h('tr', {},
        h('td', { 'data-label': 'Name' }, h('a', { href: '#/devices/' + d.device.di }, d.device.n || '(unnamed)')),
        h('td', { 'data-label': 'Device ID' }, h('code', {}, d.device.di)),
        h('td', { 'data-label': 'Types' }, (d.device.rt || []).join(', ')),
        h('td', { 'data-label': 'Status' }, h('span', { class: 'badge ' + d.status }, d.status)),
        admin ? h('td', { 'data-label': 'Owner' }, h('code', {}, d.device.owner || '')) : null)));
      fill(status, data.TotalCount === 0
        ? h('p', { class: 'muted' }, q ? 'No device matches.' : 'No devices yet. ', q ? null : h('a', { href: '#/onboard' }, 'Onboard one.'))
        : h('p', { class: 'muted' }, `${data.TotalCount} device${data.TotalCount === 1 ? '' : 's'}`));
      const base = '#/devices?' + (q ? 'q=' + encodeURIComponent(q) + '&' : '');
      fill(pager, 
        skip > 0 ? h('a', { href: base + 'skip=' + Math.max(0, skip - top) }, '← Previous') : null,
        data.TotalCount > 0 ? h('span', { class: 'muted' }, `${skip + 1}–${skip + data.value.length} of ${data.TotalCount}`) : null,
        data.Next ? h('a', { href: base + 'skip=' + (skip + top) }, 'Next →') : null);
    } catch (e) {
      fill(status, errorBox(e));
    }
  }
  await load();
  poller = setInterval(load, 5000); // online state stays live
}

async function deviceView(id) {
  show(h('h1', {}, 'Device'), h('p', { class: 'muted' }, 'Loading…'));
  const msg = h('div', { 'aria-live': 'polite' });
  let d;
  try {
    ({ data: d } = await api('GET', '/api/v1/devices/' + encodeURIComponent(id) + '?content=all'));
  } catch (e) {
    show(h('h1', {}, 'Device'), errorBox(e), h('p', {}, h('a', { href: '#/devices' }, '← All devices')));
    return;
  }
  const resources = d.links.map((l) => {
    const href = l.href.slice(1 + d.device.di.length);
    const rep = l.rep === undefined ? null : l.rep;
    const content = h('pre', { 'aria-label': 'Content of ' + href }, rep === null ? '—' : JSON.stringify(rep, null, 2));
    const result = h('div', { 'aria-live': 'polite' });
    const area = h('textarea', { rows: 3, id: 'upd-' + href, 'aria-label': 'New content for ' + href }, rep && typeof rep === 'object' ? JSON.stringify(rep) : '{}');
    async function send(payload) {
      fill(result, h('p', { class: 'muted' }, 'Sending…'));
      try {
        const { data, headers } = await api('POST', '/api/v1/devices/' + d.device.di + href, payload);
        content.textContent = JSON.stringify(data, null, 2);
        if (toggle && data && typeof data.state === 'boolean') toggle.textContent = data.state ? 'Switch off' : 'Switch on';
        fill(result, h('p', { class: 'ok' }, 'Device answered ' + (headers.get('OCF-Status') || 'OK')));
      } catch (e) {
        fill(result, errorBox(e));
      }
    }
    const toggle = rep && typeof rep.state === 'boolean'
      ? h('button', { type: 'button', onclick: () => send({ state: !JSON.parse(content.textContent).state }) }, rep.state ? 'Switch off' : 'Switch on')
      : null;
    const writable = (l.if || []).some((i) => i === 'oic.if.rw' || i === 'oic.if.a');
    return h('div', { class: 'card' },
      h('h2', {}, h('code', {}, href), ' ', h('span', { class: 'muted' }, (l.rt || []).join(', '))),
      content,
      writable ? h('form', {
        onsubmit: (ev) => {
          ev.preventDefault();
          let payload;
          try { payload = JSON.parse(area.value); } catch { fill(result, errorBox('The new content is not valid JSON.')); return; }
          send(payload);
        },
      }, h('label', { for: 'upd-' + href }, 'Update'), area, h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Send to device'), toggle)) : null,
      result);
  });
  show(
    h('p', {}, h('a', { href: '#/devices' }, '← All devices')),
    h('h1', {}, d.device.n || d.device.di, ' ', h('span', { class: 'badge ' + d.status }, d.status)),
    h('dl', { class: 'fields' }, field('Device ID', d.device.di), field('Types', (d.device.rt || []).join(', '), { copy: false, code: false }),
      d.device.owner ? field('Owner', d.device.owner) : null),
    msg,
    h('h2', {}, 'Resources'),
    resources.length ? resources : h('p', { class: 'muted' }, 'The device has published no resources.'),
    h('h2', {}, 'Offboard'),
    h('p', {}, 'The device is signed off and forgotten with its resources. It needs a new code to come back.'),
    h('button', {
      type: 'button', class: 'danger',
      onclick: async () => {
        if (!window.confirm('Offboard ' + (d.device.n || d.device.di) + '?')) return;
        try {
          await api('DELETE', '/api/v1/devices/' + d.device.di);
          window.location.hash = '#/devices';
        } catch (e) {
          fill(msg, errorBox(e));
        }
      },
    }, 'Offboard device'));
}

async function onboardView() {
  const out = h('div', { 'aria-live': 'polite' });
  const get = h('button', {
    type: 'button',
    onclick: async () => {
      get.disabled = true;
      try {
        const { data: c } = await api('POST', '/api/v1/onboarding-codes');
        fill(out, 
          h('p', {}, 'Set these values in the device\u2019s CoAPCloudConf resource (/CoAPCloudConfResURI). The code works once and expires at ', h('strong', {}, when(c.expiresAt)), '.'),
          h('dl', { class: 'fields' },
            field('apn (authorization provider)', c.apn),
            c.cis ? field('cis (unsecured, coap+tcp)', c.cis) : null,
            c.cisSecure ? field('cis (secured, coaps+tcp)', c.cisSecure) : null,
            field('sid (cloud id)', c.sid),
            field('at (onboarding code)', c.at)),
          h('label', { for: 'ca' }, 'Cloud CA (PEM)'),
          h('textarea', { id: 'ca', rows: 8, readonly: true }, c.cloudCA),
          h('div', { class: 'row' }, copyButton(c.cloudCA, 'cloud CA')),
          cfg.caFingerprint ? h('p', { class: 'muted' }, 'Cloud CA SHA-256 fingerprint: ', h('code', {}, cfg.caFingerprint)) : null,
          h('h2', {}, 'For a secured device (coaps+tcp)'),
          h('ul', {},
            h('li', {}, 'The device must be owned (onboarded with an OCF onboarding tool) before it connects.'),
            h('li', {}, 'Install the cloud CA above as a trust anchor, with subject ', h('code', {}, 'uuid:' + c.sid), ', so the device accepts the cloud\u2019s certificate.'),
            h('li', {}, 'Give the cloud an ACL entry on the device (subject uuid:' + c.sid + ') for the resources it should read and update.'),
            h('li', {}, 'The device\u2019s identity certificate must chain to the cloud\u2019s device CA and name its own device id.')),
          c.cis ? h('p', {}, 'Try it with the simulator: ', h('code', {}, `ocfcloud device-sim --cis ${c.cis} --apn ${c.apn} --sid ${c.sid} --at ${c.at}`)) : null);
      } catch (e) {
        fill(out, errorBox(e));
      } finally {
        get.disabled = false;
      }
    },
  }, 'Get a new onboarding code');
  show(h('h1', {}, 'Onboard Device'),
    h('p', {}, 'A device joins your account with a one-time code. Each click makes a fresh code.'),
    get, out);
}

const appTypes = {
  web: 'Web (password grant and authorization code, refresh tokens)',
  native: 'Native (client credentials acting as you, no refresh tokens)',
  spa: 'Single-page app (public client, authorization code + PKCE, no secret)',
};
const apiScopes = ['r:deviceinformation:*', 'r:resources:*', 'w:resources:*', 'w:subscriptions:*', 'offline_access', 'openid'];

async function appsView() {
  const list = h('tbody');
  const msg = h('div', { 'aria-live': 'polite' });
  const form = h('form', {
    onsubmit: async (ev) => {
      ev.preventDefault();
      const f = ev.target.elements;
      const body = {
        name: f.name.value.trim(), type: f.type.value, notes: f.notes.value,
        redirectUris: f.redirects.value.split(/\s+/).filter(Boolean),
        scopes: apiScopes.filter((s) => f['scope-' + s].checked),
      };
      try {
        const { data } = await api('POST', '/api/v1/apps', body);
        fill(msg, h('div', { class: 'once' },
          h('p', {}, 'App ', h('strong', {}, data.name), ' created.'),
          h('dl', { class: 'fields' }, field('Client ID', data.clientId),
            data.clientSecret ? field('Client secret (shown once; reveal it later on the app\u2019s page)', data.clientSecret) : null)));
        ev.target.reset();
        await load();
      } catch (e) {
        fill(msg, errorBox(e));
      }
    },
  },
  h('label', { for: 'app-name' }, 'Name'), h('input', { id: 'app-name', name: 'name', required: true, maxlength: 100 }),
  h('label', { for: 'app-type' }, 'Type'),
  h('select', { id: 'app-type', name: 'type' }, Object.entries(appTypes).map(([v, t]) => h('option', { value: v }, t))),
  h('label', { for: 'app-notes' }, 'Notes'), h('textarea', { id: 'app-notes', name: 'notes', rows: 2 }),
  h('label', { for: 'app-redirects' }, 'Redirect URIs (one per line)'), h('textarea', { id: 'app-redirects', name: 'redirects', rows: 2 }),
  h('fieldset', {}, h('legend', {}, 'Scopes'), apiScopes.map((s) => h('label', {},
    h('input', { type: 'checkbox', name: 'scope-' + s, checked: s.includes(':') }), ' ', s))),
  h('p', {}, h('button', { type: 'submit' }, 'Create app')));

  async function load() {
    try {
      const { data } = await api('GET', '/api/v1/apps');
      const apps = Array.isArray(data) ? data : (data.value || data.apps || []);
      fill(list, ...apps.map((a) => h('tr', {},
        h('td', { 'data-label': 'Name' }, h('a', { href: '#/apps/' + a.id }, a.name)),
        h('td', { 'data-label': 'Type' }, a.type),
        h('td', { 'data-label': 'Client ID' }, h('code', {}, a.clientId)),
        h('td', { 'data-label': 'Created' }, when(a.createdAt)))));
      if (!apps.length) fill(list, h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No apps yet.')));
    } catch (e) {
      fill(msg, errorBox(e));
    }
  }
  show(h('h1', {}, 'Apps'), msg,
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Type'), h('th', {}, 'Client ID'), h('th', {}, 'Created'))), list),
    h('h2', {}, 'New app'), form);
  await load();
}

async function appView(id) {
  const msg = h('div', { 'aria-live': 'polite' });
  let app;
  try {
    ({ data: app } = await api('GET', '/api/v1/apps/' + encodeURIComponent(id)));
  } catch (e) {
    show(h('h1', {}, 'App'), errorBox(e), h('p', {}, h('a', { href: '#/apps' }, '← All apps')));
    return;
  }
  const secret = h('dd', {}, h('code', {}, '••••••••'), app.type === 'spa' ? h('span', { class: 'muted' }, 'public client, no secret') : h('button', {
    type: 'button', class: 'secondary',
    onclick: async () => {
      try {
        const { data } = await api('POST', `/api/v1/apps/${app.id}/secret/reveal`);
        fill(secret, h('code', {}, data.clientSecret), copyButton(data.clientSecret, 'client secret'));
      } catch (e) { fill(msg, errorBox(e)); }
    },
  }, 'Reveal'));
  const tokens = h('tbody');
  const newToken = h('div', { 'aria-live': 'polite' });
  async function loadTokens() {
    try {
      const { data } = await api('GET', `/api/v1/apps/${app.id}/tokens`);
      const list = Array.isArray(data) ? data : (data.value || data.tokens || []);
      fill(tokens, ...list.map((t) => h('tr', {},
        h('td', { 'data-label': 'Token ID' }, h('code', {}, t.id)),
        h('td', { 'data-label': 'Created' }, when(t.createdAt)),
        h('td', { 'data-label': 'Expires' }, when(t.expiresAt), t.expired ? h('span', { class: 'badge offline' }, ' expired') : null),
        h('td', { 'data-label': 'Last used' }, when(t.lastUsedAt)),
        h('td', {}, h('button', {
          type: 'button', class: 'secondary', 'aria-label': 'Revoke token ' + t.id,
          onclick: async () => {
            try { await api('DELETE', `/api/v1/apps/${app.id}/tokens/${t.id}`); await loadTokens(); } catch (e) { fill(msg, errorBox(e)); }
          },
        }, 'Revoke')))));
      if (!list.length) fill(tokens, h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No access tokens.')));
    } catch (e) {
      fill(msg, errorBox(e));
    }
  }
  const inAMonth = new Date(Date.now() + 30 * 864e5).toISOString().slice(0, 10);
  show(
    h('p', {}, h('a', { href: '#/apps' }, '← All apps')),
    h('h1', {}, app.name, ' ', h('span', { class: 'role' }, app.type)),
    msg,
    h('dl', { class: 'fields' },
      field('Client ID', app.clientId),
      h('dt', {}, 'Client secret'), secret,
      field('Redirect URIs', (app.redirectUris || []).join(' ') || '—', { copy: false }),
      field('Scopes', (app.scopes || []).join(' '), { copy: false }),
      field('Notes', app.notes || '—', { copy: false, code: false }),
      field('Created', when(app.createdAt), { copy: false, code: false })),
    app.type === 'spa' ? null : h('p', {}, h('button', {
      type: 'button', class: 'secondary',
      onclick: async () => {
        if (!window.confirm('Rotate the secret? Every token and session of this app stops working.')) return;
        try {
          const { data } = await api('POST', `/api/v1/apps/${app.id}/secret/rotate`);
          fill(secret, h('code', {}, data.clientSecret), copyButton(data.clientSecret, 'client secret'));
          fill(msg, h('p', { class: 'ok' }, 'Secret rotated; the old one and its tokens no longer work.'));
        } catch (e) { fill(msg, errorBox(e)); }
      },
    }, 'Rotate secret')),
    h('h2', {}, 'Access tokens'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Token ID'), h('th', {}, 'Created'), h('th', {}, 'Expires'), h('th', {}, 'Last used'), h('th', {}, ''))), tokens),
    h('form', {
      class: 'inline',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const day = ev.target.elements.expires.value;
        try {
          const { data } = await api('POST', `/api/v1/apps/${app.id}/tokens`, { expiresAt: new Date(day + 'T23:59:59Z').toISOString() });
          fill(newToken, h('div', { class: 'once' }, h('p', {}, 'New token (shown once):'),
            h('dl', { class: 'fields' }, field('Token', data.token))));
          await loadTokens();
        } catch (e) { fill(newToken, errorBox(e)); }
      },
    }, h('div', {}, h('label', { for: 'expires' }, 'Expires on'), h('input', { id: 'expires', name: 'expires', type: 'date', required: true, value: inAMonth })),
    h('button', { type: 'submit' }, 'New token')),
    newToken,
    h('h2', {}, 'Delete'),
    h('button', {
      type: 'button', class: 'danger',
      onclick: async () => {
        if (!window.confirm('Delete ' + app.name + '? Its tokens stop working.')) return;
        try { await api('DELETE', '/api/v1/apps/' + app.id); window.location.hash = '#/apps'; } catch (e) { fill(msg, errorBox(e)); }
      },
    }, 'Delete app'));
  await loadTokens();
}

async function adminView() {
  if (!me || me.role !== 'admin') {
    show(h('h1', {}, 'Admin'), errorBox('Only administrators see this page.'));
    return;
  }
  const msg = h('div', { 'aria-live': 'polite' });
  const users = h('tbody');
  const audit = h('tbody');
  async function load() {
    try {
      const { data } = await api('GET', '/api/v1/users');
      const list = Array.isArray(data) ? data : (data.value || data.users || []);
      fill(users, ...list.map((u) => h('tr', {},
        h('td', { 'data-label': 'User' }, u.username),
        h('td', { 'data-label': 'Role' }, h('select', {
          'aria-label': 'Role of ' + u.username,
          onchange: async (ev) => {
            try { await api('PATCH', '/api/v1/users/' + u.id, { role: ev.target.value }); fill(msg, h('p', { class: 'ok' }, 'Role of ' + u.username + ' changed.')); } catch (e) { fill(msg, errorBox(e)); }
          },
        }, ['user', 'admin'].map((r) => h('option', { value: r, selected: r === u.role }, r)))),
        h('td', { 'data-label': 'Status' }, u.disabled ? 'disabled' : 'active'),
        h('td', {}, u.id === me.sub ? null : h('button', {
          type: 'button', class: 'secondary',
          onclick: async () => {
            try { await api('PATCH', '/api/v1/users/' + u.id, { disabled: !u.disabled }); await load(); } catch (e) { fill(msg, errorBox(e)); }
          },
        }, u.disabled ? 'Enable' : 'Disable')))));
      const { data: log } = await api('GET', '/api/v1/audit');
      const entries = Array.isArray(log) ? log : (log.value || log.entries || []);
      fill(audit, ...entries.slice(0, 100).map((a) => h('tr', {},
        h('td', { 'data-label': 'Time' }, when(a.time)),
        h('td', { 'data-label': 'Event' }, a.type, a.success === false ? ' (failed)' : ''),
        h('td', { 'data-label': 'User' }, h('code', {}, a.userId || '')),
        h('td', { 'data-label': 'Client' }, h('code', {}, a.clientId || '')),
        h('td', { 'data-label': 'Source' }, a.sourceIp || ''),
        h('td', { 'data-label': 'Detail' }, a.detail || ''))));
    } catch (e) {
      fill(msg, errorBox(e));
    }
  }
  show(h('h1', {}, 'Admin'), msg,
    h('h2', {}, 'Users'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'User'), h('th', {}, 'Role'), h('th', {}, 'Status'), h('th', {}, ''))), users),
    h('form', {
      class: 'inline',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const f = ev.target.elements;
        try {
          await api('POST', '/api/v1/users', { username: f.username.value.trim(), password: f.password.value, role: f.role.value });
          ev.target.reset();
          fill(msg, h('p', { class: 'ok' }, 'User created.'));
          await load();
        } catch (e) { fill(msg, errorBox(e)); }
      },
    },
    h('div', {}, h('label', { for: 'nu-name' }, 'Username'), h('input', { id: 'nu-name', name: 'username', required: true })),
    h('div', {}, h('label', { for: 'nu-pw' }, 'Password'), h('input', { id: 'nu-pw', name: 'password', type: 'password', required: true, minlength: 8, autocomplete: 'new-password' })),
    h('div', {}, h('label', { for: 'nu-role' }, 'Role'), h('select', { id: 'nu-role', name: 'role' }, h('option', { value: 'user' }, 'user'), h('option', { value: 'admin' }, 'admin'))),
    h('button', { type: 'submit' }, 'Create user')),
    h('h2', {}, 'Audit log'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Event'), h('th', {}, 'User'), h('th', {}, 'Client'), h('th', {}, 'Source'), h('th', {}, 'Detail'))), audit));
  await load();
}

// ---------- router ----------

async function route() {
  if (poller) { clearInterval(poller); poller = null; }
  const [path, query] = (window.location.hash.slice(1) || '/devices').split('?');
  const params = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean);
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === parts[0]) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  try {
    switch (parts[0]) {
      case 'devices': await (parts[1] ? deviceView(decodeURIComponent(parts[1])) : devicesView(params)); break;
      case 'onboard': await onboardView(); break;
      case 'apps': await (parts[1] ? appView(decodeURIComponent(parts[1])) : appsView()); break;
      case 'admin': await adminView(); break;
      default: window.location.hash = '#/devices';
    }
  } catch (e) {
    show(errorBox(e));
  }
  main.focus();
}

async function start() {
  try {
    await finishSignIn();
  } catch (e) {
    show(h('h1', {}, 'Sign-in failed'), errorBox(e), h('button', { type: 'button', onclick: signIn }, 'Sign in again'));
    return;
  }
  if (!(await accessToken())) {
    show(h('h1', {}, 'Welcome to ocfcloud'),
      h('p', {}, 'Onboard OCF devices, watch and control them, and manage the apps that use the API.'),
      h('button', { type: 'button', id: 'signin', onclick: signIn }, 'Sign in'));
    return;
  }
  try {
    ({ data: me } = await api('GET', '/userinfo'));
  } catch (e) {
    show(errorBox(e));
    return;
  }
  document.getElementById('who-name').textContent = me.preferred_username || me.sub;
  document.getElementById('who-role').textContent = me.role || 'user';
  document.getElementById('who').hidden = false;
  document.getElementById('nav').hidden = false;
  document.getElementById('nav-admin').hidden = me.role !== 'admin';
  document.getElementById('signout').addEventListener('click', signOut);
  window.addEventListener('hashchange', route);
  await route();
}

await start();
