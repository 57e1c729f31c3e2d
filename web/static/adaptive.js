// cardguard dashboard, recommendations: fills the recommendation parts of the
// tenant and metric pages, and runs the preview, apply and revert buttons of the
// recommendations page against the recommendations API with the admin token.
// app.js loads each page; this script only reacts to what it put in #main.
'use strict';
(function () {
  const base = document.body.dataset.base || '/ui';
  const tokenKey = 'cardguard.adminToken';
  const main = document.getElementById('main');
  let message = null; // {text, kind, refusal}: shown again after a reload
  let pollTimer = 0;

  function headers() {
    let t = '';
    try { t = sessionStorage.getItem(tokenKey) || ''; } catch (e) { /* storage disabled */ }
    return t ? { Authorization: 'Bearer ' + t } : {};
  }

  async function fill(el) {
    el.dataset.loaded = '1';
    const q = new URLSearchParams();
    if (el.dataset.tenant) q.set('tenant', el.dataset.tenant);
    if (el.dataset.metric) q.set('metric', el.dataset.metric);
    try {
      const resp = await fetch(base + '/fragment/' + el.dataset.adaptiveFragment + '?' + q, { headers: headers(), cache: 'no-store' });
      if (resp.ok) el.innerHTML = await resp.text();
    } catch (e) { /* the page works without this part */ }
  }

  // reload fetches the recommendations page again and puts it in place.
  async function reload() {
    const page = document.getElementById('adaptive-page');
    if (!page) return;
    const resp = await fetch(base + '/fragment/recommendations' + location.search, { headers: headers(), cache: 'no-store' });
    if (!resp.ok) return;
    const html = await resp.text();
    const cur = document.getElementById('adaptive-page');
    if (cur) cur.outerHTML = html;
  }

  function showMessage() {
    const status = document.getElementById('adaptive-status');
    if (!status || !message || status.dataset.shown) return;
    status.dataset.shown = '1';
    status.textContent = message.text;
    status.className = message.kind;
    if (message.refusal) {
      const ul = document.createElement('ul');
      ul.id = 'adaptive-refusal';
      for (const r of message.refusal.readers || []) {
        const li = document.createElement('li');
        li.textContent = r.kind + ': ' + r.name + (r.query ? ' — ' + r.query : '');
        ul.append(li);
      }
      const force = document.createElement('button');
      force.type = 'button';
      force.textContent = 'Apply anyway';
      force.dataset.adaptiveAction = 'apply';
      force.dataset.force = 'true';
      force.dataset.metric = message.refusal.metric;
      force.dataset.kind = message.ruleKind || '';
      force.dataset.segment = message.segment || '';
      status.append(ul, force);
    }
  }

  async function act(btn) {
    const page = document.getElementById('adaptive-page');
    if (!page) return;
    const row = btn.closest('tr');
    const metric = btn.dataset.metric || (row && row.dataset.metric);
    const kind = btn.dataset.kind || (row && row.dataset.kind) || '';
    // A segment's row acts on that segment's rule only.
    const segment = btn.dataset.segment !== undefined ? btn.dataset.segment : ((row && row.dataset.segment) || '');
    const action = btn.dataset.adaptiveAction;
    const q = new URLSearchParams();
    if (kind) q.set('kind', kind);
    if (segment) q.set('segment', segment);
    if (btn.dataset.force === 'true') q.set('force', 'true');
    // Colons stay as they are: tenants (1:0) and recording rules (job:rate5m).
    const seg = (s) => encodeURIComponent(s).replace(/%3A/g, ':');
    const url = page.dataset.api + '/' + seg(page.dataset.tenant) + '/metrics/' + seg(metric) + '/' + action + '?' + q;
    btn.disabled = true;
    let resp, body = {};
    try {
      resp = await fetch(url, { method: 'POST', headers: headers() });
      try { body = await resp.json(); } catch (e) { body = {}; }
    } catch (e) {
      message = { text: 'cardguard did not answer: ' + e.message, kind: 'bad' };
      showMessage();
      btn.disabled = false;
      return;
    }
    if (resp.ok) {
      const verb = { preview: 'Preview started for ', apply: 'Applied the rule to ', revert: 'Reverted the rule of ' }[action];
      message = { text: verb + metric + (segment ? ' (segment ' + segment + ')' : '') + '.', kind: 'ok' };
    } else if (resp.status === 409 && body.refusal) {
      message = { text: body.error, kind: 'bad', refusal: body.refusal, ruleKind: kind, segment: segment };
    } else if (resp.status === 401 || resp.status === 403) {
      message = { text: 'This needs the admin token: enter it in the field above.', kind: 'bad' };
    } else {
      message = { text: body.error || ('HTTP ' + resp.status), kind: 'bad' };
    }
    await reload();
  }

  // While a preview measures, look again every second.
  function schedulePoll() {
    if (pollTimer) return;
    if (!main.querySelector('[data-preview-state="waiting"], [data-preview-state="measuring"]')) return;
    pollTimer = setTimeout(async () => { pollTimer = 0; await reload(); }, 1000);
  }

  function scan() {
    for (const el of main.querySelectorAll('[data-adaptive-fragment]:not([data-loaded])')) fill(el);
    if (document.getElementById('adaptive-page')) {
      showMessage();
      schedulePoll();
    } else {
      message = null;
    }
  }

  // Choosing a segment reloads the list for it, scoped to its series.
  main.addEventListener('change', (ev) => {
    if (ev.target.id !== 'adaptive-segment') return;
    const q = new URLSearchParams(location.search);
    if (ev.target.value) q.set('segment', ev.target.value); else q.delete('segment');
    q.delete('refresh');
    history.replaceState(history.state, '', location.pathname + '?' + q);
    message = null;
    reload();
  });
  main.addEventListener('click', (ev) => {
    const btn = ev.target.closest('[data-adaptive-action]');
    if (btn) { ev.preventDefault(); act(btn); }
  });
  new MutationObserver(scan).observe(main, { childList: true, subtree: true });
  scan();
})();
