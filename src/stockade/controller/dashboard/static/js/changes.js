// Changes: revision history, the diff between two revisions, rollback, and each host's revision.
(function () {
  'use strict';
  const S = window.Stockade;

  async function hosts() {
    const tbody = S.clear(document.querySelector('#host-revisions tbody'));
    const status = await S.api('/status');
    for (const a of status.agents) {
      tbody.append(S.el('tr', { dataset: { host: a.host } }, S.el('td', { text: a.host }),
        S.el('td', { text: a.revision + (a.revision < status.revision ? ' (current: ' + status.revision + ')' : '') }),
        S.el('td', { class: 'verdict ' + (a.inSync && a.reporting ? 'allow' : 'deny'),
                     text: !a.reporting ? 'not reporting' : a.inSync ? 'yes' : 'no' }),
        S.el('td', { text: S.fmtTime(a.appliedAt) })));
    }
  }

  function describe(objects) {
    return objects.map((o) => o.type + ' ' + o.kind + ' ' + (o.namespace ? o.namespace + '/' : '') + o.name).join(', ');
  }

  async function history() {
    const tbody = S.clear(document.querySelector('#revisions tbody'));
    const answer = await S.api('/revisions', { params: { limit: 200 } });
    const newest = answer.revisions.length ? answer.revisions[0].revision : 0;
    for (const r of answer.revisions) {
      const actions = S.el('td', {});
      if (r.revision > 1 || answer.revisions.length > 1) {
        actions.append(S.el('button', { class: 'secondary diff-prev', type: 'button', text: 'diff',
                                        onclick: () => diff(r.revision - 1, r.revision) }));
      }
      if (S.mayWrite && r.revision !== newest) {
        actions.append(' ', S.el('button', { class: 'danger rollback', type: 'button', dataset: { revision: r.revision },
                                             text: 'roll back to this', onclick: () => rollback(r.revision) }));
      }
      tbody.append(S.el('tr', { dataset: { revision: r.revision } }, S.el('td', { text: r.revision }),
        S.el('td', { text: S.fmtTime(r.time) }), S.el('td', { text: r.author }), S.el('td', { text: r.message || '' }),
        S.el('td', { text: describe(r.objects) }), actions));
    }
    if (newest && !document.getElementById('diff-to').value) {
      document.getElementById('diff-to').value = newest;
      document.getElementById('diff-from').value = Math.max(0, newest - 1);
    }
  }

  function line(cls, text) { return S.el('span', { class: cls, text: text + '\n' }); }

  async function diff(from, to) {
    const out = S.clear(document.getElementById('diff-output'));
    document.getElementById('diff-from').value = from;
    document.getElementById('diff-to').value = to;
    try {
      const d = await S.api('/revisions/diff', { params: { from, to } });
      out.append(line('hdr', 'revision ' + d.from + ' → ' + d.to + ': ' + d.objects.length + ' object(s) changed'));
      for (const o of d.objects) {
        out.append(line('hdr', o.action + ' ' + o.kind + ' ' + (o.namespace ? o.namespace + '/' : '') + o.name));
        for (const f of o.fields) {
          const path = f.path || '(whole object)';
          if (f.op !== 'add') out.append(line('del', '- ' + path + ': ' + JSON.stringify(f.old)));
          if (f.op !== 'remove') out.append(line('add', '+ ' + path + ': ' + JSON.stringify(f.new)));
        }
      }
      out.hidden = false;
      S.clearError();
    } catch (e) { S.showError(null, e); }
  }

  async function rollback(revision) {
    if (!window.confirm('Roll back to revision ' + revision + '? This commits a new revision restoring every object as it was then.')) return;
    try {
      const result = await S.api('/rollback', { method: 'POST', body: { revision, message: 'rollback from the dashboard' } });
      S.clearError();
      await refresh();
      const note = document.getElementById('page-error');
      note.hidden = false; note.className = 'note';
      note.textContent = 'Rolled back: revision ' + result.revision + ' restores revision ' + revision + '.';
    } catch (e) { S.showError(null, e); }
  }

  async function refresh() {
    try { await Promise.all([hosts(), history()]); } catch (e) { S.showError(null, e); }
  }

  document.getElementById('diff-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    diff(Number(document.getElementById('diff-from').value), Number(document.getElementById('diff-to').value));
  });
  refresh();
  setInterval(hosts, 5000);
})();
