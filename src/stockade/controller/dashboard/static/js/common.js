// What every dashboard page shares: the API client (session cookie + CSRF header), a safe DOM
// builder (text only: data never becomes markup), links between pages, and logout.
(function () {
  'use strict';
  const body = document.body;
  const API = '/api/v1';

  async function api(path, opts) {
    const o = opts || {};
    const method = o.method || 'GET';
    let url = API + path;
    if (o.params) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(o.params)) {
        if (v === undefined || v === null || v === '' || v === false) continue;
        if (Array.isArray(v)) v.forEach((x) => q.append(k, x)); else q.append(k, String(v));
      }
      const s = q.toString();
      if (s) url += (url.includes('?') ? '&' : '?') + s;
    }
    const headers = { 'Accept': 'application/json' };
    if (method !== 'GET') headers['X-Stockade-CSRF'] = body.dataset.csrf || '';
    if (o.body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(url, { method, headers, credentials: 'same-origin',
                                   body: o.body !== undefined ? JSON.stringify(o.body) : undefined,
                                   signal: o.signal });
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (res.status === 401) { location.href = '/ui/login?next=' + encodeURIComponent(location.pathname + location.search); }
    if (!res.ok) {
      const err = new Error((data && data.message) || (res.status + ' ' + res.statusText));
      err.status = res.status; err.body = data;
      throw err;
    }
    return data;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function ruleAnchor(rule) { return 'rule-' + String(rule).replace(/[^A-Za-z0-9_-]/g, '_'); }

  function ruleLink(rule) {
    if (!rule) return el('span', { class: 'muted', text: '—' });
    return el('a', { class: 'rule-link mono', href: '/ui/policy?rule=' + encodeURIComponent(rule) + '#' + ruleAnchor(rule),
                     text: rule });
  }

  function verdict(v) { return el('span', { class: 'verdict ' + String(v || ''), text: v || '' }); }

  function showError(container, err) {
    const box = container || document.getElementById('page-error');
    box.hidden = false;
    box.textContent = (err && err.message) ? err.message : String(err);
  }

  function clearError(container) {
    const box = container || document.getElementById('page-error');
    box.hidden = true; box.textContent = '';
  }

  function fmtTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString(undefined, { hour12: false });
  }

  function params() { return Object.fromEntries(new URLSearchParams(location.search)); }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  function endLabel(end) {
    if (!end) return '';
    const who = end.workload || end.namespace || '';
    const addr = end.ip + (end.port ? ':' + end.port : '');
    return who ? who + ' (' + addr + ')' : addr;
  }

  window.Stockade = { api, el, ruleLink, ruleAnchor, verdict, showError, clearError, fmtTime, params, clear, endLabel,
                      csrf: body.dataset.csrf, role: body.dataset.role, scoped: body.dataset.scoped === 'true',
                      mayWrite: body.dataset.mayWrite === 'true' };

  const logout = document.getElementById('logout');
  if (logout) {
    logout.addEventListener('click', async () => {
      try {
        await fetch('/ui/logout', { method: 'POST', credentials: 'same-origin',
                                    headers: { 'X-Stockade-CSRF': body.dataset.csrf || '' } });
      } finally { location.href = '/ui/login'; }
    });
  }
})();
