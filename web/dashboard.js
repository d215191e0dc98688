'use strict';
// Staff dashboard: leads, their follow-up timeline and chat transcript, refreshed every 3 s.
(() => {
  const KEY = 'leadorch.staffKey';
  const REFRESH_MS = 3000;
  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const tbody = $('leads').tBodies[0];
  const select = $('location');
  let key = sessionStorage.getItem(KEY) || '';
  let locations = new Map();
  let selected = decodeURIComponent(location.hash.slice(1)) || null;
  let timer = 0;
  let gen = 0;

  class AuthError extends Error {}

  async function api(path) {
    const res = await fetch(path, { headers: { Authorization: 'Bearer ' + key, Accept: 'application/json' }, cache: 'no-store' });
    if (res.status === 401) throw new AuthError('unauthorized');
    if (!res.ok) {
      let msg = '';
      try { msg = (await res.json()).error; } catch { /* not JSON */ }
      throw Object.assign(new Error(msg || 'HTTP ' + res.status), { status: res.status });
    }
    return res.json();
  }

  // Builds an element; string children become text nodes (never parsed as HTML).
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    el.append(...kids.flat().filter((k) => k != null && k !== false && k !== ''));
    return el;
  }

  // Updates `parent`'s children in place to match `items`, keyed by item.id in data-{attr};
  // rebuilds only items whose JSON changed, and moves nodes only when the order changed.
  function reconcile(parent, items, attr, build) {
    const old = new Map();
    for (const el of parent.children) old.set(el.dataset[attr], el);
    items.forEach((item, i) => {
      const id = String(item.id);
      const sig = JSON.stringify(item);
      let el = old.get(id);
      old.delete(id);
      if (!el || el._sig !== sig) {
        const next = build(item, el);
        if (el && next !== el) el.replaceWith(next);
        el = next;
        el.dataset[attr] = id;
        el._sig = sig;
      }
      const at = parent.children[i];
      if (at !== el) parent.insertBefore(el, at || null);
    });
    for (const el of old.values()) el.remove();
  }

  // ---- formatting (browser locale and time zone) ----
  const full = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  const short = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit' });
  const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto', style: 'short' });

  function ago(iso) {
    const s = (Date.now() - Date.parse(iso)) / 1000;
    if (s < 45) return rtf.format(-Math.max(0, Math.round(s)), 'second');
    if (s < 3600) return rtf.format(-Math.round(s / 60), 'minute');
    if (s < 86400) return rtf.format(-Math.round(s / 3600), 'hour');
    if (s < 7 * 86400) return rtf.format(-Math.round(s / 86400), 'day');
    return short.format(new Date(iso));
  }
  const when = (iso, rel) => (iso ? h('time', { datetime: iso, title: full.format(new Date(iso)), class: rel ? 'rel' : null },
    rel ? ago(iso) : short.format(new Date(iso))) : '—');
  function range(a, b) {
    const x = new Date(a);
    const y = new Date(b);
    try { return short.formatRange(x, y); } catch { return short.format(x) + ' – ' + short.format(y); }
  }
  function speed(ms) {
    if (ms == null) return '—';
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    if (ms < 3600000) return (ms / 60000).toFixed(1) + ' min';
    return (ms / 3600000).toFixed(1) + ' h';
  }
  const badge = (status) => h('span', { class: 'status status-' + status }, status);
  const locName = (id) => (locations.get(id) || {}).name || '—';

  // ---- UI state ----
  const setError = (msg) => { $('dash-error').textContent = msg; };

  function showApp(on) {
    $('auth').hidden = on;
    $('app').hidden = !on;
    $('toolbar').hidden = !on;
  }

  function signOut(msg) {
    gen += 1;
    clearTimeout(timer);
    key = '';
    selected = null;
    history.replaceState(null, '', location.pathname);
    sessionStorage.removeItem(KEY);
    tbody.replaceChildren();
    showDetail(false);
    showApp(false);
    setError('');
    $('last-updated').textContent = '';
    $('key-error').textContent = msg || '';
    $('api-key').value = '';
    $('api-key').focus();
  }

  async function signIn() {
    $('key-submit').disabled = true;
    try {
      const data = await api('/api/locations');
      locations = new Map((data.locations || []).map((l) => [l.id, l]));
      const keep = select.value || sessionStorage.getItem('leadorch.location') || '';
      select.replaceChildren(h('option', { value: '' }, 'All locations'),
        ...[...locations.values()].sort((a, b) => a.name.localeCompare(b.name)).map((l) => h('option', { value: l.id }, l.name)));
      select.value = locations.has(keep) ? keep : '';
      $('key-error').textContent = '';
      showApp(true);
      if (selected) showDetail(true);
      tick();
    } catch (e) {
      if (e instanceof AuthError) signOut('That key was not accepted.');
      else { showApp(false); $('key-error').textContent = "Couldn't reach the server (" + e.message + '). Try again.'; }
    } finally {
      $('key-submit').disabled = false;
    }
  }

  // ---- leads table ----
  function leadRow(l, tr) {
    tr = tr || h('tr', { tabindex: '0' });
    tr.dataset.leadId = l.id;
    tr.replaceChildren(
      h('td', { class: 'customer' }, l.first_name || '—'),
      h('td', null, l.vehicle || '—'),
      h('td', null, locName(l.location_id)),
      h('td', { class: 'status' }, badge(l.status)),
      h('td', null, when(l.received_at, true)),
      h('td', { class: 'num' }, speed(l.speed_to_lead_ms)),
    );
    return tr;
  }

  async function loadLeads() {
    const loc = select.value;
    const data = await api('/api/leads?limit=50' + (loc ? '&location=' + enc(loc) : ''));
    if (select.value !== loc) return;
    const leads = data.leads || [];
    reconcile(tbody, leads, 'leadId', leadRow);
    for (const t of tbody.querySelectorAll('time.rel')) {
      const text = ago(t.getAttribute('datetime'));
      if (t.textContent !== text) t.textContent = text;
    }
    markSelected();
    $('empty').hidden = leads.length > 0;
    $('leads').hidden = leads.length === 0;
  }

  function markSelected() {
    for (const tr of tbody.rows) {
      const on = tr.dataset.leadId === selected;
      tr.classList.toggle('selected', on);
      if (on) tr.setAttribute('aria-current', 'true');
      else tr.removeAttribute('aria-current');
    }
  }

  function choose(id) {
    selected = id;
    history.replaceState(null, '', '#' + enc(id));
    markSelected();
    showDetail(true);
    for (const el of [$('lead-summary'), $('timeline'), $('transcript'), $('appointment')]) { el.replaceChildren(); el._sig = null; }
    $('detail-title').textContent = 'Loading…';
    if (matchMedia('(max-width: 63.99rem)').matches) $('lead-detail').scrollIntoView({ block: 'start' });
    loadDetail(id).catch(onFail);
  }

  tbody.addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-lead-id]');
    if (tr) choose(tr.dataset.leadId);
  });
  tbody.addEventListener('keydown', (e) => {
    const tr = e.target.closest('tr[data-lead-id]');
    if (!tr) return;
    if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); choose(tr.dataset.leadId); }
    else if (e.key === 'ArrowDown' && tr.nextElementSibling) { e.preventDefault(); tr.nextElementSibling.focus(); }
    else if (e.key === 'ArrowUp' && tr.previousElementSibling) { e.preventDefault(); tr.previousElementSibling.focus(); }
  });

  // ---- lead detail ----
  function showDetail(on) {
    $('detail-body').hidden = !on;
    $('detail-placeholder').hidden = on;
    if (!on) $('detail-title').textContent = 'Lead details';
  }

  async function loadDetail(id) {
    const [lead, chat] = await Promise.all([
      api('/api/leads/' + enc(id)).catch((e) => { if (e.status === 404) return null; throw e; }),
      api('/api/leads/' + enc(id) + '/chat').catch((e) => { if (e instanceof AuthError) throw e; return null; }),
    ]);
    if (id !== selected) return;
    if (lead) return renderDetail(lead, chat);
    selected = null; // the lead is gone (or the link named another tenant's lead)
    markSelected();
    showDetail(false);
  }

  // Replaces el's children only when sig changed since the last render.
  function patch(el, sig, build) {
    if (el._sig === sig) return;
    el._sig = sig;
    el.replaceChildren(...build().flat().filter((k) => k != null && k !== ''));
  }

  function renderDetail(lead, chat) {
    const name = [lead.first_name, lead.last_name].filter(Boolean).join(' ') || 'Lead';
    $('detail-title').textContent = name + (lead.vehicle ? ' — ' + lead.vehicle : '');
    const { timeline = [], ...fields } = lead;
    patch($('lead-summary'), JSON.stringify(fields), () => {
      const row = (label, value) => (value == null || value === '' ? [] : [h('dt', null, label), h('dd', null, value)]);
      return [
        row('Status', badge(lead.status)),
        row('Location', locName(lead.location_id)),
        row('Vehicle', lead.vehicle),
        row('Services', (lead.requested_services || []).join(', ')),
        row('Phone', lead.phone),
        row('Email', lead.email),
        row('Received', when(lead.received_at)),
        row('First touch', lead.first_touch_at && when(lead.first_touch_at)),
        row('Speed to lead', lead.speed_to_lead_ms == null ? null : speed(lead.speed_to_lead_ms)),
        row('Cadence', lead.cadence_name && lead.cadence_name + (lead.cadence_version ? ' v' + lead.cadence_version : '')),
        row('CRM order', lead.crm_order_id && (lead.crm_source ? lead.crm_source + ' · ' : '') + lead.crm_order_id),
      ].flat();
    });
    reconcile($('timeline'), timeline, 'touchId', touchItem);
    $('timeline-empty').hidden = timeline.length > 0;

    const appt = chat && chat.appointment;
    const box = $('appointment');
    box.hidden = !appt;
    if (appt) {
      patch(box, JSON.stringify(appt), () => [
        h('strong', null, 'Appointment'), ' ', badge(appt.status || 'booked'),
        h('div', null, [appt.service, range(appt.starts_at, appt.ends_at)].filter(Boolean).join(' · ')),
        appt.crm_appointment_id ? h('div', { class: 'muted' }, 'CRM appointment ' + appt.crm_appointment_id) : null,
      ]);
    }
    const transcript = $('transcript');
    const msgs = chat ? (chat.messages || []).filter((m) => m.role !== 'system' && (m.content || m.status !== 'partial')) : [];
    const end = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 40;
    const before = transcript.children.length;
    reconcile(transcript, msgs, 'messageId', msgItem);
    if (end && transcript.children.length !== before) transcript.scrollTop = transcript.scrollHeight;
    const none = $('transcript-empty');
    none.hidden = msgs.length > 0;
    none.textContent = chat ? 'No chat messages yet.' : "Couldn't load the chat.";
  }

  function touchItem(t, li) {
    const open = !!(li && li.querySelector('details[open]'));
    li = li || h('li');
    li.dataset.status = t.status;
    const email = t.channel === 'email';
    const moved = t.intended_at && t.scheduled_at && t.intended_at !== t.scheduled_at;
    li.replaceChildren(...[
      h('div', { class: 'touch-head' },
        h('span', { class: 'chan chan-' + t.channel }, email ? 'Email' : 'SMS'),
        h('span', { class: 'template' }, t.template),
        badge(t.status)),
      h('div', { class: 'touch-meta' },
        'Step ' + (t.step_index + 1) + ' · ',
        t.sent_at ? ['Sent ', when(t.sent_at)] : ['Scheduled ', when(t.scheduled_at)],
        moved ? [' (planned ', when(t.intended_at), t.placement_reason ? ': ' + t.placement_reason : '', ')'] : '',
        t.provider_status ? ' · Provider: ' + t.provider_status : '',
        t.attempts > 1 ? ' · ' + t.attempts + ' attempts' : ''),
      t.last_error ? h('div', { class: 'error' }, t.last_error) : null,
      t.preview != null ? h('details', { open }, h('summary', null, 'Message text'), h('p', { class: 'preview' }, t.preview)) : null,
    ].filter(Boolean));
    return li;
  }

  function msgItem(m, el) {
    const role = m.role === 'user' ? 'user' : 'assistant';
    const failed = m.status && m.status !== 'complete';
    el = el || h('div');
    el.className = 'msg msg-' + role + (m.role === 'staff' ? ' msg-staff' : '') + (failed ? ' msg-error' : '');
    if (m.created_at) el.title = full.format(new Date(m.created_at));
    el.replaceChildren(h('div', { class: 'msg-text' }, m.content || ''));
    const meta = [m.provider, m.model,
      m.cost_micros != null ? '$' + (m.cost_micros / 1e6).toFixed(4) : null,
      m.first_token_ms != null ? m.first_token_ms + ' ms first token' : null,
      failed ? m.status : null].filter(Boolean);
    if (role === 'assistant' && meta.length) el.append(h('div', { class: 'msg-meta' }, meta.join(' · ')));
    return el;
  }

  // ---- refresh loop ----
  function onFail(e) {
    if (e instanceof AuthError) signOut('That key was not accepted.');
    else setError("Couldn't refresh (" + e.message + '). Retrying…');
  }

  async function tick() {
    clearTimeout(timer);
    if (!key) return;
    const mine = ++gen;
    try {
      await loadLeads();
      if (selected) await loadDetail(selected);
      if (mine !== gen) return;
      $('last-updated').textContent = 'Updated ' + clock.format(new Date());
      setError('');
    } catch (e) {
      if (mine !== gen) return;
      onFail(e);
      if (e instanceof AuthError) return;
    }
    if (mine === gen && key) timer = setTimeout(tick, document.hidden ? 30000 : REFRESH_MS);
  }

  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const value = $('api-key').value.trim();
    if (!value) return;
    key = value;
    sessionStorage.setItem(KEY, key);
    $('api-key').value = '';
    signIn();
  });
  $('sign-out').addEventListener('click', () => signOut(''));
  select.addEventListener('change', () => {
    sessionStorage.setItem('leadorch.location', select.value);
    tick();
  });
  document.addEventListener('visibilitychange', () => { if (!document.hidden && key) tick(); });

  if (key) signIn();
  else showApp(false);
})();
