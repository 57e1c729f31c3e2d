// cardguard dashboard: loads the server-rendered fragment for the current URL with
// the admin token (kept in sessionStorage only) and sends limit changes to the
// limits API. No dependencies, no build step.
'use strict';
(function () {
  const base = document.body.dataset.base || '/ui';
  const tokenKey = 'cardguard.adminToken';
  const main = document.getElementById('main');
  const tokenForm = document.getElementById('token-form');
  const tokenInput = document.getElementById('token');
  const tokenForget = document.getElementById('token-forget');
  const tokenState = document.getElementById('token-state');
  const pages = { '/': 'overview', '': 'overview', '/tenant': 'tenant', '/metric': 'metric', '/limits': 'limits', '/recommendations': 'recommendations' };

  function token() {
    try { return sessionStorage.getItem(tokenKey) || ''; } catch (e) { return ''; }
  }
  function setToken(t) {
    try {
      if (t) sessionStorage.setItem(tokenKey, t); else sessionStorage.removeItem(tokenKey);
    } catch (e) { /* storage disabled: the token lasts for this page only */ }
    showTokenState();
  }
  function showTokenState() {
    const has = token() !== '';
    tokenForget.hidden = !has;
    tokenState.textContent = has ? 'token set for this tab' : '';
    tokenInput.placeholder = has ? '••••••••' : 'needed when auth is on';
  }
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const t = token();
    if (t) h.Authorization = 'Bearer ' + t;
    return h;
  }

  function page() {
    return pages[location.pathname.slice(base.length)] || 'overview';
  }

  async function load() {
    const name = page();
    const tenant = new URLSearchParams(location.search).get('tenant');
    for (const a of document.querySelectorAll('header nav a')) {
      a.classList.toggle('current', a.dataset.nav === name || (name !== 'limits' && a.dataset.nav === 'overview'));
      if (a.dataset.nav === 'limits') {
        a.href = base + '/limits' + (tenant ? '?tenant=' + encodeURIComponent(tenant) : '');
      }
    }
    const current = main.querySelector('.page');
    if (current) current.setAttribute('aria-busy', 'true');
    let resp;
    try {
      resp = await fetch(base + '/fragment/' + name + location.search, { headers: headers(), cache: 'no-store' });
    } catch (e) {
      main.innerHTML = '';
      main.append(callout('error', 'cardguard did not answer: ' + e.message));
      return;
    }
    if (resp.status === 401 || resp.status === 403) {
      main.innerHTML = '';
      main.append(callout('error', resp.status === 401
        ? 'This dashboard needs the admin token: enter it in the field above.'
        : 'This token may not see the dashboard: it needs the admin token, not a tenant token.'));
      document.title = 'Token needed · cardguard';
      tokenInput.focus();
      return;
    }
    main.innerHTML = await resp.text();
    const p = main.querySelector('.page');
    document.title = (p && p.dataset.title ? p.dataset.title + ' · ' : '') + 'cardguard';
    bindLimits();
  }

  function callout(kind, text) {
    const p = document.createElement('p');
    p.className = 'callout ' + kind;
    p.id = 'load-error';
    p.textContent = text;
    return p;
  }

  // ---- limits form ----

  function convert(v, kind) {
    if (v === '') return null; // JSON merge patch: remove the override
    switch (kind) {
      case 'int':
        return /^-?\d+$/.test(v) ? Number(v) : v; // a non-number goes as is: the API names the field
      case 'float':
        return v.trim() !== '' && isFinite(Number(v)) ? Number(v) : v;
      case 'list':
        return v.split(',').map(s => s.trim()).filter(s => s !== '');
      case 'json':
        try { return JSON.parse(v); } catch (e) { return v; } // the API names the field
      default:
        return v;
    }
  }

  function setPath(obj, path, value) {
    const parts = path.split('.');
    let o = obj;
    for (let i = 0; i < parts.length - 1; i++) {
      o = o[parts[i]] = o[parts[i]] || {};
    }
    o[parts[parts.length - 1]] = value;
  }

  function clearErrors(form) {
    for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  }

  function bindLimits() {
    const form = document.getElementById('limits-form');
    if (!form) return;
    const status = document.getElementById('limits-status');
    const formError = document.getElementById('limits-error');
    form.addEventListener('reset', () => { clearErrors(form); status.textContent = ''; });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      status.textContent = '';
      const patch = {};
      let changed = 0;
      for (const el of form.querySelectorAll('[data-path]')) {
        const v = el.value.trim();
        if (v === el.dataset.initial) continue;
        setPath(patch, el.dataset.path, convert(v, el.dataset.kind));
        changed++;
      }
      if (changed === 0) {
        status.textContent = 'Nothing changed.';
        return;
      }
      status.textContent = 'Saving…';
      let resp, text;
      try {
        resp = await fetch(form.dataset.api, {
          method: 'PATCH',
          headers: headers({ 'Content-Type': 'application/json' }),
          body: JSON.stringify(patch),
        });
        text = await resp.text();
      } catch (e) {
        status.textContent = '';
        formError.textContent = 'cardguard did not answer: ' + e.message;
        return;
      }
      if (resp.ok) {
        await load();
        const s = document.getElementById('limits-status');
        if (s) s.textContent = 'Saved ' + changed + (changed === 1 ? ' change.' : ' changes.');
        return;
      }
      status.textContent = '';
      if (resp.status === 401 || resp.status === 403) {
        formError.textContent = 'Saving needs the admin token: enter it in the field above (' + text.trim() + ').';
        tokenInput.focus();
        return;
      }
      let body = {};
      try { body = JSON.parse(text); } catch (e) { body = { error: text.trim() }; }
      const slot = body.field ? form.querySelector('[data-error-for="' + CSS.escape(body.field) + '"]') : null;
      if (slot) {
        slot.textContent = body.reason || body.error;
        const input = form.querySelector('[data-path="' + CSS.escape(body.field) + '"]');
        if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
      } else {
        formError.textContent = body.error || ('HTTP ' + resp.status);
      }
    });
  }

  tokenForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = tokenInput.value.trim();
    if (v === '') return;
    setToken(v);
    tokenInput.value = '';
    load();
  });
  tokenForget.addEventListener('click', () => { setToken(''); load(); });
  showTokenState();
  load();
})();
