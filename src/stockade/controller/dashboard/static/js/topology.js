// The Topology page: GET /api/v1/topology drawn as a Cytoscape graph (hosts as compound parents of
// their workloads, groups and policies as nodes with edges to what they select, one colour per
// namespace) and as a table; clicking a workload (node or row) asks GET /api/v1/topology/reach and
// fills #workload-detail with #reach-out and #reach-in, one li[data-peer] per peer.
// Everything the API says is put in the page as text (Stockade.el), never as markup.
(function () {
  'use strict';
  const S = window.Stockade;
  const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2',
                   '#7f7f7f', '#bcbd22'];
  const graphBox = document.getElementById('topology-graph');
  const tbody = document.querySelector('#topology-table tbody');
  let cy = null;
  let reachRequest = 0;  // only the newest click's answer is shown

  function colours(namespaces) {
    const out = {};
    namespaces.forEach((ns, i) => { out[ns.name] = PALETTE[i % PALETTE.length]; });
    return out;
  }

  function labelsText(labels) {
    return Object.entries(labels || {}).map(([k, v]) => k + '=' + v);
  }

  // What points at each workload: the groups it is in and the policies that apply to it.
  function selectors(topo) {
    const groups = {}; const policies = {};
    for (const g of topo.groups) for (const m of g.members) (groups[m] = groups[m] || []).push(g.id);
    for (const p of topo.policies) {
      const dirs = {};
      for (const w of p.appliesTo.ingress) (dirs[w] = dirs[w] || []).push('in');
      for (const w of p.appliesTo.egress) (dirs[w] = dirs[w] || []).push('out');
      for (const [w, d] of Object.entries(dirs)) (policies[w] = policies[w] || []).push({ policy: p, dirs: d });
    }
    return { groups, policies };
  }

  function elements(topo, colour) {
    const els = [];
    for (const h of topo.hosts) {
      const agent = h.agent;
      const state = !agent ? 'no agent report' : (agent.current ? 'in sync, revision ' + agent.revision
        : (agent.error ? 'error' : (agent.reporting ? 'revision ' + agent.revision + (agent.inSync ? '' : ', out of sync')
          : 'not reporting')));
      els.push({ group: 'nodes', data: { id: 'host:' + h.name, label: h.name + ' (' + state + ')', kind: 'host',
                                         sync: agent && agent.current ? 'good' : 'bad' } });
    }
    for (const w of topo.workloads) {
      els.push({ group: 'nodes', data: { id: 'wl:' + w.id, parent: 'host:' + w.host, label: w.id, kind: 'workload',
                                         workload: w.id, colour: colour[w.namespace] || '#555' } });
    }
    for (const g of topo.groups) {
      els.push({ group: 'nodes', data: { id: 'grp:' + g.id, label: 'group ' + g.id, kind: 'group',
                                         colour: colour[g.namespace] || '#555' } });
      for (const m of g.members) {
        els.push({ group: 'edges', data: { id: 'm:' + g.id + '>' + m, source: 'grp:' + g.id, target: 'wl:' + m,
                                           kind: 'member', label: '' } });
      }
    }
    for (const p of topo.policies) {
      els.push({ group: 'nodes', data: { id: 'pol:' + p.id, kind: 'policy',
                                         label: p.kind + ' ' + (p.namespace ? p.namespace + '/' : '') + p.name +
                                                ' [' + p.tier + (p.mode === 'audit' ? ', audit' : '') + ']',
                                         colour: p.namespace ? (colour[p.namespace] || '#555') : '#16202f' } });
      const dirs = {};
      for (const w of p.appliesTo.ingress) (dirs[w] = dirs[w] || []).push('in');
      for (const w of p.appliesTo.egress) (dirs[w] = dirs[w] || []).push('out');
      for (const [w, d] of Object.entries(dirs)) {
        els.push({ group: 'edges', data: { id: 'a:' + p.id + '>' + w, source: 'pol:' + p.id, target: 'wl:' + w,
                                           kind: 'applies', label: d.join('+') } });
      }
    }
    return els;
  }

  const STYLE = [
    { selector: 'node', style: { 'label': 'data(label)', 'font-size': 10, 'text-valign': 'bottom',
                                 'text-margin-y': 3, 'color': '#1d2430' } },
    { selector: 'node[kind = "host"]', style: { 'shape': 'round-rectangle', 'background-color': '#eef2f8',
                                                'border-width': 2, 'border-color': '#9aa6b8', 'text-valign': 'top',
                                                'font-weight': 'bold', 'padding': 14 } },
    { selector: 'node[kind = "host"][sync = "bad"]', style: { 'border-color': '#b42318', 'border-style': 'dashed' } },
    { selector: 'node[kind = "workload"]', style: { 'shape': 'ellipse', 'background-color': 'data(colour)',
                                                    'width': 22, 'height': 22 } },
    { selector: 'node[kind = "group"]', style: { 'shape': 'hexagon', 'background-color': 'data(colour)',
                                                 'background-opacity': 0.35, 'border-width': 2,
                                                 'border-color': 'data(colour)', 'width': 26, 'height': 26 } },
    { selector: 'node[kind = "policy"]', style: { 'shape': 'diamond', 'background-color': 'data(colour)',
                                                  'background-opacity': 0.2, 'border-width': 2,
                                                  'border-color': 'data(colour)', 'width': 26, 'height': 26 } },
    { selector: 'edge', style: { 'width': 1.2, 'curve-style': 'bezier', 'target-arrow-shape': 'triangle',
                                 'arrow-scale': 0.7, 'line-color': '#b8c2d1', 'target-arrow-color': '#b8c2d1',
                                 'label': 'data(label)', 'font-size': 9, 'color': '#5d6778' } },
    { selector: 'edge[kind = "member"]', style: { 'line-style': 'dotted' } },
    { selector: 'node:selected', style: { 'border-width': 4, 'border-color': '#f1b400' } },
  ];

  // A fixed layout that reads the same every time: hosts side by side, each a grid of its workloads
  // (sorted by namespace and name); groups in a row above, policies in a row below. (A force-directed
  // layout let the host boxes overlap once policies pulled workloads of two hosts together.)
  function positions(topo) {
    const pos = {};
    const cellW = 130; const cellH = 70; const gap = 90;
    let x = 0; let maxRows = 1;
    for (const h of topo.hosts) {
      const n = Math.max(1, h.workloads.length);
      const cols = Math.max(1, Math.ceil(Math.sqrt(n)));
      h.workloads.forEach((w, i) => { pos['wl:' + w] = { x: x + (i % cols) * cellW, y: 220 + Math.floor(i / cols) * cellH }; });
      if (!h.workloads.length) pos['host:' + h.name] = { x: x, y: 220 };
      maxRows = Math.max(maxRows, Math.ceil(n / cols));
      x += cols * cellW + gap;
    }
    const width = Math.max(x - gap, cellW);
    const row = (items, prefix, y) => {
      const step = items.length > 1 ? Math.max(width / (items.length - 1), 120) : 0;
      items.forEach((it, i) => { pos[prefix + it.id] = { x: items.length > 1 ? i * step : width / 2, y: y + (i % 2) * 36 }; });
    };
    row(topo.groups, 'grp:', 40);
    row(topo.policies, 'pol:', 220 + maxRows * cellH + 90);
    return pos;
  }

  function drawGraph(topo, colour) {
    if (typeof cytoscape !== 'function') {
      S.showError(null, new Error('the graph library (cytoscape) did not load; the table below still works'));
      return;
    }
    cy = cytoscape({ container: graphBox, elements: elements(topo, colour), style: STYLE,
                     layout: { name: 'preset', positions: positions(topo), fit: true, padding: 24 },
                     minZoom: 0.2, maxZoom: 3 });
    cy.on('tap', 'node[kind = "workload"]', (evt) => select(evt.target.data('workload')));
    window.StockadeTopology = { cy };  // for tests and the console
  }

  function drawLegend(topo, colour) {
    const legend = S.clear(document.getElementById('topology-legend'));
    for (const ns of topo.namespaces) {
      const swatch = S.el('span', { class: 'swatch' });
      swatch.style.background = colour[ns.name];
      legend.append(swatch, S.el('span', { text: ns.name + ' (' + ns.defaultAction + ')' }));
    }
  }

  function drawTable(topo) {
    const by = selectors(topo);
    S.clear(tbody);
    for (const w of topo.workloads) {
      const ep = w.endpoint || {};
      const endpoint = [ep.attachment, ep.createdBy === 'runtime' ? 'attached' + (ep.attachedBy ? ' by ' + ep.attachedBy : '')
        : 'made by stockade', ep.interface, ep.netns].filter(Boolean).join(' · ');
      const row = S.el('tr', { class: 'clickable', dataset: { workload: w.id } },
        S.el('td', { class: 'mono', text: w.id }),
        S.el('td', { text: w.host }),
        S.el('td', {}, labelsText(w.labels).map((t) => S.el('span', { class: 'chip', text: t }))),
        S.el('td', { class: 'mono' }, w.ips.join(' ')),
        S.el('td', {}, (by.groups[w.id] || []).map((g) => S.el('span', { class: 'chip', text: g }))),
        S.el('td', {}, (by.policies[w.id] || []).map((x) => S.el('span', { class: 'chip',
          text: (x.policy.namespace ? x.policy.namespace + '/' : '') + x.policy.name + ' (' + x.dirs.join('+') + ')' }))),
        S.el('td', { class: 'muted', text: endpoint }));
      row.addEventListener('click', () => select(w.id));
      tbody.append(row);
    }
  }

  // Another namespace's rule id is redacted (NS/(hidden)): no Policy page has it, so no link.
  function ruleOrHidden(rule) {
    return rule && rule.endsWith('/(hidden)') ? S.el('span', { class: 'mono muted', text: rule }) : S.ruleLink(rule);
  }

  function rowsTable(rows) {
    return S.el('table', {},
      S.el('thead', {}, S.el('tr', {}, S.el('th', { text: 'flow' }), S.el('th', { text: 'verdict' }),
                                 S.el('th', { text: 'decided by' }), S.el('th', { text: 'side' }))),
      S.el('tbody', {}, rows.map((r) => S.el('tr', { dataset: { label: r.label } },
        S.el('td', { class: 'mono', text: r.label }), S.el('td', {}, S.verdict(r.verdict)),
        S.el('td', {}, ruleOrHidden(r.rule)), S.el('td', { class: 'muted', text: r.side })))));
  }

  function peerItem(entry, way) {
    // The text names each verdict and its rule; the table below says the same per flow.
    const byOutcome = new Map();
    for (const r of entry.rows) {
      const key = r.verdict + ' by ' + (r.rule || 'no rule');
      if (!byOutcome.has(key)) byOutcome.set(key, []);
      byOutcome.get(key).push(r.label);
    }
    const words = [...byOutcome].map(([outcome, labels]) => outcome + ': ' + labels.join(', '));
    const notes = [];
    if (entry.hidden) notes.push('another namespace: its workloads are not named, each distinct outcome is listed');
    if (entry.omittedProbes) notes.push(entry.omittedProbes + ' more ports not traced (limit per peer)');
    for (const p of entry.problems) notes.push(p);
    return S.el('li', { class: 'summary-' + entry.summary, dataset: { peer: entry.peer, summary: entry.summary, way } },
      S.el('span', { class: 'peer mono', text: entry.peer }),
      S.el('span', { class: 'verdict ' + (entry.summary === 'allow' ? 'allow' : entry.summary === 'deny' ? 'deny' : ''),
                     text: entry.summary }),
      S.el('span', { class: 'muted', text: ' — ' + (words.join('; ') || 'nothing to trace') }),
      notes.length ? S.el('div', { class: 'muted', text: notes.join('; ') }) : null,
      entry.rows.length ? rowsTable(entry.rows) : null);
  }

  async function select(id) {
    const mine = ++reachRequest;
    for (const tr of tbody.querySelectorAll('tr')) tr.classList.toggle('selected', tr.dataset.workload === id);
    if (cy) { cy.$(':selected').unselect(); cy.$id('wl:' + id).select(); }
    const body = document.getElementById('detail-body');
    const errBox = document.getElementById('detail-error');
    document.getElementById('detail-title').textContent = 'Reachability of ' + id;
    document.getElementById('detail-hint').textContent = 'Tracing every peer…';
    S.clearError(errBox);
    try {
      const answer = await S.api('/topology/reach', { params: { workload: id } });
      if (mine !== reachRequest) return;
      S.clear(document.getElementById('reach-out')).append(...answer.outgoing.map((e) => peerItem(e, 'out')));
      S.clear(document.getElementById('reach-in')).append(...answer.incoming.map((e) => peerItem(e, 'in')));
      document.getElementById('detail-summary').textContent =
        'Revision ' + answer.revision + ': each port the policies in play name, and any other port, traced as ' +
        '`stockade trace` does.';
      document.getElementById('detail-hint').textContent = '';
      body.hidden = false;
      const url = new URL(location.href);
      url.searchParams.set('workload', id);
      history.replaceState(null, '', url);
    } catch (err) {
      if (mine !== reachRequest) return;
      body.hidden = true;
      document.getElementById('detail-hint').textContent = '';
      S.showError(errBox, err);
    }
  }

  async function load() {
    try {
      const topo = await S.api('/topology');
      const colour = colours(topo.namespaces);
      document.getElementById('topology-revision').textContent = 'revision ' + topo.revision;
      drawLegend(topo, colour);
      drawTable(topo);
      drawGraph(topo, colour);
      const wanted = S.params().workload;
      if (wanted && topo.workloads.some((w) => w.id === wanted)) select(wanted);
    } catch (err) {
      S.showError(null, err);
    }
  }

  load();
})();
