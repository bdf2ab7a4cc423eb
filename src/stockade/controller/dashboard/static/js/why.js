// Why: trace's verdict and deciding rule, that rule's counters, and its recent flow records,
// side by side (all naming the same rule id).
(function () {
  'use strict';
  const S = window.Stockade;
  const form = document.getElementById('why-form');
  const mine = (document.body.dataset.namespaces || '').split(',').filter(Boolean);

  async function fillNames() {
    try {
      const list = await S.api('/objects/workloads');
      const dl = document.getElementById('workload-names');
      for (const w of list.items) dl.append(S.el('option', { value: w.metadata.namespace + '/' + w.metadata.name }));
    } catch (e) { /* the names are a convenience: typing still works */ }
  }

  function steps(side, title) {
    if (!side) return null;
    const list = S.el('ol', {});
    for (const r of side.rules) {
      list.append(S.el('li', {}, S.el('span', { class: 'chip', text: r.action }), ' ', S.ruleLink(r.rule),
                       r.tier ? S.el('span', { class: 'muted', text: ' tier ' + r.tier }) : null));
    }
    if (!side.rules.length) list.append(S.el('li', { class: 'muted', text: 'no rule matched: the default' }));
    return S.el('div', {}, S.el('h3', { text: title + ' on ' + side.host + ': ' + side.verdict }), list);
  }

  async function counters(rule) {
    const box = S.clear(document.getElementById('why-counters'));
    if (!rule) { box.append(S.el('p', { class: 'muted', text: 'No rule decided: the namespace default did.' })); return; }
    try {
      const answer = await S.api('/rules', { params: { rule } });
      // With ?rule= the answer lists the matching rules flat (both directions when they share the id).
      const found = answer.rules.find((r) => r.id === rule);
      if (!found) { box.append(S.el('p', { class: 'muted', text: 'No counters for ' + rule + ' yet.' })); return; }
      box.append(S.el('table', {}, S.el('tbody', {},
        S.el('tr', {}, S.el('th', { text: 'rule' }), S.el('td', {}, S.ruleLink(rule))),
        S.el('tr', {}, S.el('th', { text: 'packets' }), S.el('td', { class: 'hits-packets', text: found.packets })),
        S.el('tr', {}, S.el('th', { text: 'bytes' }), S.el('td', { class: 'hits-bytes', text: found.bytes })),
        S.el('tr', {}, S.el('th', { text: 'flows' }), S.el('td', { class: 'hits-flows', text: found.flows })))));
    } catch (e) {
      box.append(S.el('p', { class: 'muted', text: 'Counters unavailable: ' + e.message }));
    }
  }

  async function recentFlows(rule, from, to) {
    const tbody = S.clear(document.querySelector('#why-flows tbody'));
    const note = document.getElementById('why-flows-note');
    const end = mine.length && !mine.includes(from.split('/')[0]) ? to : from;
    try {
      // The controller filters by rule (in the caller's view) and gives the newest 20, oldest first.
      const page = await S.api('/flows', { params: { workload: end, rule: rule || undefined, limit: 20 } });
      const records = page.records.slice().reverse();
      for (const r of records) {
        tbody.append(S.el('tr', { dataset: { seq: r.seq, rule: r.rule || '' } }, S.el('td', { text: S.fmtTime(r.time) }),
          S.el('td', { text: r.host }), S.el('td', {}, S.verdict(r.verdict)), S.el('td', { text: S.endLabel(r.src) }),
          S.el('td', { text: S.endLabel(r.dst) }), S.el('td', {}, S.ruleLink(r.rule))));
      }
      note.textContent = records.length ? '' : 'No flow record names this rule for ' + end + ' yet.';
    } catch (e) { note.textContent = 'Flow records unavailable: ' + e.message; }
  }

  async function ask(ev) {
    if (ev) ev.preventDefault();
    const q = { from: form.elements.from.value.trim(), to: form.elements.to.value.trim(),
                port: form.elements.port.value || undefined, protocol: form.elements.protocol.value,
                family: form.elements.family.value };
    history.replaceState(null, '', location.pathname + '?' + new URLSearchParams(Object.entries(q).filter(([, v]) => v)));
    try {
      const t = await S.api('/trace', { params: q });
      S.clearError();
      document.getElementById('why-result').hidden = false;
      const v = document.getElementById('why-verdict');
      v.textContent = t.verdict; v.className = 'value verdict ' + t.verdict;
      const rule = S.clear(document.getElementById('why-rule'));
      rule.append(S.ruleLink(t.decidingRule));
      rule.dataset.rule = t.decidingRule || '';
      const box = S.clear(document.getElementById('why-steps'));
      box.append(S.el('p', { class: 'muted', text: q.from + ' (' + t.src_ip + ') → ' + q.to + ' (' + t.dst_ip + ') ' +
                                                   q.protocol + (q.port ? '/' + q.port : '') }));
      box.append(steps(t.egress, 'Egress'));
      if (t.ingress) box.append(steps(t.ingress, 'Ingress'));
      await Promise.all([counters(t.decidingRule), recentFlows(t.decidingRule, q.from, q.to)]);
    } catch (e) { S.showError(null, e); document.getElementById('why-result').hidden = true; }
  }

  form.addEventListener('submit', ask);
  fillNames();
  const given = S.params();
  for (const k of ['from', 'to', 'port', 'protocol', 'family']) if (given[k]) form.elements[k].value = given[k];
  if (given.from && given.to) ask();
})();
