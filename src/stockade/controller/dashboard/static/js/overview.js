// Overview: enforcement health from /overview, trends from /trends (Prometheus when there is one).
(function () {
  'use strict';
  const S = window.Stockade;
  let flowsChart = null, trendsChart = null;

  function set(id, text) { document.getElementById(id).textContent = text; }
  function secs(v) { return v === null || v === undefined ? '—' : (v < 1 ? (v * 1000).toFixed(0) + ' ms' : v.toFixed(2) + ' s'); }

  function renderOverview(o) {
    set('hosts-in-sync', o.hostsEnforcingCurrent + '/' + o.hostsTotal);
    document.getElementById('tile-sync').className = 'tile ' + (o.hostsTotal && o.hostsEnforcingCurrent === o.hostsTotal ? 'good' : 'bad');
    set('revision', o.revision);
    set('enforced-revision', o.enforcedRevision === null ? 'none reporting' : o.enforcedRevision);
    set('rollout-p99', secs(o.rollouts.p99Seconds));
    set('rollout-p50', secs(o.rollouts.p50Seconds) + ', ' + o.rollouts.count + ' measured');
    set('drift-repairs', o.driftRepairs);
    set('evaluation-errors', o.evaluationErrors);
    document.getElementById('tile-errors').className = 'tile ' + (o.evaluationErrors ? 'bad' : 'good');
    const recent = o.flowsPerMinute.slice(-5).reduce((n, m) => n + m.denied, 0);
    set('denied-last-minute', recent);
    set('window-minutes', o.windowMinutes);
    set('flow-sample-note', o.flowSampleFull ? ' (the newest ' + o.flowsCounted + ' records only)' : '');
    const hosts = S.clear(document.querySelector('#overview-hosts tbody'));
    for (const h of o.hosts) {
      const state = !h.reporting ? 'not reporting' : h.error ? 'error: ' + h.error : h.inSync ? 'in sync' : 'drifted';
      hosts.append(S.el('tr', { dataset: { host: h.host } },
        S.el('td', { text: h.host }), S.el('td', { text: h.revision + (h.lagRevisions ? ' (' + h.lagRevisions + ' behind)' : '') }),
        S.el('td', { class: h.reporting && h.inSync && !h.error ? 'verdict allow' : 'verdict deny', text: state }),
        S.el('td', { text: h.driftRepairs }), S.el('td', { text: S.fmtTime(h.lastSeen) })));
    }
    const top = S.clear(document.querySelector('#top-denied tbody'));
    if (!o.topDenied.length) top.append(S.el('tr', {}, S.el('td', { colspan: 4, class: 'muted', text: 'no denied flows in the window' })));
    for (const p of o.topDenied) {
      top.append(S.el('tr', {}, S.el('td', { text: p.src }), S.el('td', { text: p.dst }),
                      S.el('td', { text: p.count }), S.el('td', {}, S.ruleLink(p.rule))));
    }
    const labels = o.flowsPerMinute.map((m) => m.minute.slice(11, 16));
    const data = { labels, datasets: [
      { label: 'denied', data: o.flowsPerMinute.map((m) => m.denied), backgroundColor: '#b42318' },
      { label: 'allowed', data: o.flowsPerMinute.map((m) => m.allowed), backgroundColor: '#1b7f3b' }] };
    if (flowsChart) { flowsChart.data = data; flowsChart.update('none'); }
    else {
      flowsChart = new Chart(document.getElementById('flows-chart'), { type: 'bar', data,
        options: { animation: false, maintainAspectRatio: false, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } } });
    }
  }

  function renderTrends(t) {
    const note = document.getElementById('trend-source');
    if (t.source !== 'prometheus') {
      note.textContent = 'Prometheus: not used. ' + t.reason;
      note.dataset.source = 'controller';
      return;
    }
    note.textContent = 'From Prometheus at ' + t.url + ' (last ' + Math.round(t.rangeSeconds / 60) + ' minutes).';
    note.dataset.source = 'prometheus';
    const series = [['enforcementSuccess', 'enforcement success (ratio)', '#1b7f3b', 'y'],
                    ['agentsUp', 'agents up (ratio)', '#1f5fbf', 'y'],
                    ['rolloutP99Seconds', 'rollout p99 (s)', '#b26b00', 'y1'],
                    ['deniedFlowsPerSecond', 'denied flows/s', '#b42318', 'y1']];
    const times = new Set();
    for (const [name] of series) for (const [ts] of (t.series[name] || [])) times.add(ts);
    const axis = [...times].sort((a, b) => a - b);
    const datasets = series.map(([name, label, color, y]) => {
      const byTime = new Map((t.series[name] || []).map(([ts, v]) => [ts, v]));
      return { label, borderColor: color, backgroundColor: color, yAxisID: y, pointRadius: 0,
               data: axis.map((ts) => (byTime.has(ts) ? byTime.get(ts) : null)) };
    });
    const labels = axis.map((ts) => new Date(ts * 1000).toISOString().slice(11, 16));
    if (trendsChart) { trendsChart.data = { labels, datasets }; trendsChart.update('none'); return; }
    trendsChart = new Chart(document.getElementById('trends-chart'), { type: 'line', data: { labels, datasets },
      options: { animation: false, maintainAspectRatio: false, spanGaps: true,
                 scales: { y: { min: 0, max: 1, position: 'left' }, y1: { beginAtZero: true, position: 'right', grid: { drawOnChartArea: false } } } } });
  }

  async function refresh() {
    try {
      renderOverview(await S.api('/overview'));
      renderTrends(await S.api('/trends'));
      S.clearError();
    } catch (e) { S.showError(null, e); }
  }
  refresh();
  setInterval(refresh, 5000);
})();
