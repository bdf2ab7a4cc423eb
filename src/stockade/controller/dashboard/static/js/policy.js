// Policy: tiers → policies → rules from GET /api/v1/rules, each rule with its hit counters
// (packets, bytes, flows; would-deny for audit rules), unused rules marked, a bar chart of the
// most-hit rules. /ui/policy?rule=ID scrolls to that rule and selects it.
// Element ids and classes here are what the browser tests look for (dash_common.md): keep them.
(function () {
  'use strict';
  const S = window.Stockade;
  const tree = document.getElementById('policy-tree');
  const filter = document.getElementById('policy-filter');
  const onlyUnused = document.getElementById('policy-only-unused');
  const REFRESH_MS = 10000;
  const CHART_TOP = 10;
  let chart = null;
  let shownRevision = null;
  let selectedDone = false;

  function fmtBytes(n) {
    if (n < 1024) return n + ' B';
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    let v = n / 1024, i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return v.toFixed(1) + ' ' + units[i];
  }

  function perHost(rule) {
    return rule.hosts.length ? rule.hosts.map((h) => h.host + ': ' + h.packets + ' packets, ' + h.bytes + ' bytes').join('\n')
                             : 'no host counted a packet';
  }

  // A DOM id per rule: the contract's id for the first element of a rule id, a suffixed one for
  // the other direction when an ingress and an egress rule share the id (ids must stay unique).
  function ruleElementId(rule, used) {
    const base = S.ruleAnchor(rule.id);
    if (!used.has(base)) { used.add(base); return base; }
    const other = base + '--' + rule.direction;
    used.add(other);
    return other;
  }

  function counterCells(rule) {
    return [
      S.el('td', { class: 'num hits-packets', title: perHost(rule), text: rule.packets }),
      S.el('td', { class: 'num hits-bytes', title: rule.bytes + ' bytes', text: fmtBytes(rule.bytes) }),
      S.el('td', { class: 'num hits-flows', text: rule.flows }),
      rule.wouldDeny === null ? S.el('td', { class: 'muted', text: '—' })
                              : S.el('td', { class: 'num hits-would-deny', text: rule.wouldDeny }),
    ];
  }

  function ruleRow(rule, used, audit, showDescription) {
    const row = S.el('tr', { id: ruleElementId(rule, used), class: 'rule' + (rule.unused ? ' unused' : ''),
                             dataset: { rule: rule.id, direction: rule.direction } },
      S.el('td', {}, S.el('a', { class: 'mono rule-id', href: '/ui/policy?rule=' + encodeURIComponent(rule.id), text: rule.id }),
           rule.unused ? S.el('span', { class: 'chip unused-chip', text: 'unused' }) : null,
           rule.description && showDescription ? S.el('div', { class: 'muted', text: rule.description }) : null),
      S.el('td', { text: rule.direction }),
      S.el('td', {}, S.el('span', { class: 'verdict ' + (audit ? 'would-' : '') + rule.action, text: (audit ? 'audit ' : '') + rule.action })),
      S.el('td', { class: 'mono', text: rule.peers }),
      S.el('td', { class: 'mono', text: rule.ports }),
      ...counterCells(rule));
    return row;
  }

  // `showDescription`: false for the namespace defaults, whose section header says what they are.
  function rulesTable(rules, used, audit, showDescription = true) {
    return S.el('table', { class: 'rules' },
      S.el('thead', {}, S.el('tr', {}, ...['rule', 'direction', 'action', 'peers (from / to)', 'ports', 'packets', 'bytes', 'flows', 'would deny']
        .map((h) => S.el('th', { text: h })))),
      S.el('tbody', {}, rules.map((r) => ruleRow(r, used, audit, showDescription))));
  }

  function policyBlock(policy, used) {
    const owner = policy.namespace ? policy.namespace + '/' + policy.name : policy.name;
    const audit = policy.mode === 'audit';
    return S.el('div', { class: 'policy' + (audit ? ' audit' : ''), dataset: { policy: owner, kind: policy.kind } },
      S.el('h3', {}, S.el('span', { class: 'chip', text: policy.kind }), ' ', S.el('span', { class: 'mono', text: owner }),
           S.el('span', { class: 'muted', text: ' order ' + policy.order + ' · applies to ' + policy.appliesTo }),
           audit ? S.el('span', { class: 'chip audit-chip', text: 'audit mode' }) : null),
      policy.rules.length ? rulesTable(policy.rules, used, audit)
                          : S.el('p', { class: 'muted', text: 'No rules: it only selects its workloads (what it does not allow is denied).' }));
  }

  function render(view) {
    const used = new Set();
    S.clear(tree);
    for (const tier of view.tiers) {
      const section = S.el('section', { class: 'panel tier', dataset: { tier: tier.name } },
        S.el('h2', { text: 'Tier ' + tier.name }));
      if (!tier.policies.length) section.append(S.el('p', { class: 'muted', text: 'No policy in this tier.' }));
      for (const p of tier.policies) section.append(policyBlock(p, used));
      tree.append(section);
    }
    const defaults = S.el('section', { class: 'panel tier defaults', dataset: { tier: '(namespace defaults)' } },
      S.el('h2', { text: 'Namespace defaults (after the last tier)' }));
    for (const d of view.defaults) {
      defaults.append(S.el('div', { class: 'policy', dataset: { policy: d.namespace + '/default', kind: 'Namespace' } },
        S.el('h3', {}, S.el('span', { class: 'chip', text: 'Namespace' }), ' ', S.el('span', { class: 'mono', text: d.namespace }),
             S.el('span', { class: 'muted', text: ' default action ' + d.defaultAction })),
        rulesTable(d.rules, used, false, false)));
    }
    if (!view.defaults.length) defaults.append(S.el('p', { class: 'muted', text: 'No namespace.' }));
    tree.append(defaults);
    applyFilter();
  }

  // Counters change every heartbeat, the tree only with a new revision: update the cells in place
  // so that the reader's place (scroll, selection) stays.
  function updateCounters(view) {
    for (const rule of allRules(view)) {
      const row = tree.querySelector('tr[data-rule="' + CSS.escape(rule.id) + '"][data-direction="' + rule.direction + '"]');
      if (!row) return false;
      const cells = counterCells(rule);
      const old = row.querySelectorAll('td');
      for (let i = 0; i < cells.length; i++) row.replaceChild(cells[i], old[old.length - cells.length + i]);
      row.classList.toggle('unused', rule.unused);
      const chip = row.querySelector('.unused-chip');
      if (!rule.unused && chip) chip.remove();
      if (rule.unused && !chip) row.querySelector('.rule-id').after(S.el('span', { class: 'chip unused-chip', text: 'unused' }));
    }
    return true;
  }

  function allRules(view) {
    const out = [];
    for (const t of view.tiers) for (const p of t.policies) out.push(...p.rules);
    for (const d of view.defaults) out.push(...d.rules);
    return out;
  }

  function renderSummary(view) {
    const rules = allRules(view);
    const unused = rules.filter((r) => r.unused).length;
    document.getElementById('policy-rule-count').textContent = rules.length;
    document.getElementById('policy-unused-count').textContent = unused;
    document.getElementById('tile-unused').className = 'tile' + (unused ? ' bad' : ' good');
    document.getElementById('policy-hosts').textContent = view.hosts.length;
    document.getElementById('policy-revision').textContent = view.revision;
    const omitted = Object.entries(view.omitted || {});
    document.getElementById('policy-omitted').textContent = omitted.length
      ? 'Some hosts left their least-hit rules out of their reports (a cap per report): '
        + omitted.map(([h, n]) => h + ' ' + n).join(', ') + '. Those rules may show fewer hits than they had.'
      : '';
  }

  function renderChart(view) {
    const top = allRules(view).filter((r) => r.packets > 0).sort((a, b) => b.packets - a.packets).slice(0, CHART_TOP);
    const data = {
      labels: top.map((r) => r.id + ' (' + r.direction + ')'),
      datasets: [{ label: 'packets', data: top.map((r) => r.packets), backgroundColor: '#3b6fd8' }],
    };
    if (chart) { chart.data = data; chart.update('none'); return; }
    chart = new Chart(document.getElementById('rules-chart'), { type: 'bar', data,
      options: { indexAxis: 'y', animation: false, maintainAspectRatio: false,
                 plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true } },
                 onClick: (_, elements) => { if (elements.length) select(top[elements[0].index].id, true); } } });
  }

  function applyFilter() {
    const q = filter.value.trim().toLowerCase();
    for (const row of tree.querySelectorAll('tr.rule')) {
      const policy = row.closest('.policy');
      const text = (row.dataset.rule + ' ' + (policy ? policy.dataset.policy : '')).toLowerCase();
      row.hidden = (q && !text.includes(q)) || (onlyUnused.checked && !row.classList.contains('unused'));
    }
    for (const p of tree.querySelectorAll('.policy')) {
      const rows = p.querySelectorAll('tr.rule');
      p.hidden = rows.length > 0 && [...rows].every((r) => r.hidden);
    }
  }

  function select(ruleId, scroll) {
    for (const old of tree.querySelectorAll('.selected')) old.classList.remove('selected');
    const target = document.getElementById(S.ruleAnchor(ruleId));
    if (!target) return false;
    target.classList.add('selected');
    target.hidden = false;
    if (scroll) target.scrollIntoView({ block: 'center' });
    history.replaceState(null, '', '/ui/policy?rule=' + encodeURIComponent(ruleId) + '#' + target.id);
    return true;
  }

  tree.addEventListener('click', (ev) => {
    const link = ev.target.closest('a.rule-id');
    if (!link) return;
    ev.preventDefault();
    select(link.closest('tr').dataset.rule, false);
  });

  async function refresh() {
    try {
      const view = await S.api('/rules');
      S.clearError();
      if (view.revision !== shownRevision || !updateCounters(view)) {
        const selected = tree.querySelector('.selected');
        render(view);
        shownRevision = view.revision;
        if (selected) select(selected.dataset.rule, false);
      }
      renderSummary(view);
      renderChart(view);
      const wanted = S.params().rule;
      if (wanted && !selectedDone) {
        selectedDone = true;
        if (!select(wanted, true)) S.showError(null, new Error('No rule ' + wanted + ' in revision ' + view.revision
                                                              + ' that this session may read.'));
      }
    } catch (e) {
      S.showError(null, e);
    }
  }

  filter.addEventListener('input', applyFilter);
  onlyUnused.addEventListener('change', applyFilter);
  document.getElementById('policy-filters').addEventListener('submit', (ev) => ev.preventDefault());
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
