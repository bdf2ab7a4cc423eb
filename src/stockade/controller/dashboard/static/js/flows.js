// Flows: the controller's flow history, filtered, then followed live (a long poll on /flows).
(function () {
  'use strict';
  const S = window.Stockade;
  const form = document.getElementById('flow-filters');
  const tbody = document.querySelector('#flows-table tbody');
  const MAX_ROWS = 500;
  let lastSeq = null;
  let generation = 0;   // a new filter starts a new follow loop; older loops stop
  let controller = null;

  function filters() {
    const f = {};
    for (const name of ['namespace', 'workload', 'from', 'to', 'rule', 'port', 'protocol']) {
      const v = form.elements[name].value.trim();
      if (v) f[name] = v;
    }
    const verdict = form.elements.verdict.value;
    if (verdict === 'denied') f.denied = true; else if (verdict) f.verdict = verdict;
    const since = form.elements.since.value;
    if (since) f.since = new Date(since).toISOString();
    return f;
  }

  function row(r) {
    return S.el('tr', { dataset: { seq: r.seq, verdict: r.verdict, rule: r.rule || '' } },
      S.el('td', { text: r.seq }), S.el('td', { text: S.fmtTime(r.time) }), S.el('td', { text: r.host }),
      S.el('td', { text: r.direction }), S.el('td', {}, S.verdict(r.verdict)),
      S.el('td', { text: S.endLabel(r.src) }), S.el('td', { text: S.endLabel(r.dst) }),
      S.el('td', { text: r.protocol + (r.icmpType !== undefined && r.icmpType !== null ? ' type ' + r.icmpType : '') }),
      S.el('td', {}, S.ruleLink(r.rule)), S.el('td', { text: r.event }));
  }

  function add(records, newestFirst) {
    for (const r of records) {
      const tr = row(r);
      if (newestFirst) tbody.prepend(tr); else tbody.append(tr);
    }
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(tbody.rows.length - 1);
    document.getElementById('flows-count').textContent = tbody.rows.length + ' records shown (newest first, at most ' + MAX_ROWS + ')';
  }

  function live(on, text) {
    document.getElementById('flows-live').className = 'live' + (on ? '' : ' off');
    document.getElementById('flows-live-text').textContent = text;
  }

  async function start() {
    const mine = ++generation;
    if (controller) controller.abort();
    controller = new AbortController();
    S.clear(tbody);
    const f = filters();
    try {
      const first = await S.api('/flows', { params: { ...f, limit: 200 }, signal: controller.signal });
      add(first.records.slice().reverse(), false);
      lastSeq = first.lastSeq;
      S.clearError();
    } catch (e) { if (e.name !== 'AbortError') { S.showError(null, e); live(false, 'stopped'); } return; }
    live(true, 'live');
    while (mine === generation) {
      try {
        const page = await S.api('/flows', { params: { ...f, since_seq: lastSeq, follow_timeout: 20, limit: 500 },
                                             signal: controller.signal });
        if (mine !== generation) return;
        add(page.records, true);
        lastSeq = page.lastSeq;
        live(true, 'live');
      } catch (e) {
        if (e.name === 'AbortError' || mine !== generation) return;
        live(false, 'reconnecting: ' + e.message);
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  // The URL carries the filters, so a filtered view can be linked to (e.g. from the Why page).
  const given = S.params();
  for (const [k, v] of Object.entries(given)) {
    if (form.elements[k]) form.elements[k].value = k === 'since' ? v.slice(0, 19) : v;
  }
  // A tenant reads one of its namespaces at a time (the API asks it to name one when it has several).
  const mine = (document.body.dataset.namespaces || '').split(',').filter(Boolean);
  if (S.scoped && mine.length > 1 && !form.elements.namespace.value && !form.elements.workload.value) {
    form.elements.namespace.value = mine[0];
  }
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const el of form.elements) if (el.name && el.value) q.set(el.name, el.value);
    history.replaceState(null, '', location.pathname + (q.toString() ? '?' + q : ''));
    start();
  });
  document.getElementById('f-clear').addEventListener('click', () => { form.reset(); history.replaceState(null, '', location.pathname); start(); });
  start();
})();
