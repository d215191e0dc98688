'use strict';
// Customer chat page: history, then a live SSE stream; text only ever goes through textContent.
(() => {
  const $ = (id) => document.getElementById(id);
  const match = /^\/c\/([^/]+)\/?$/.exec(location.pathname);
  const token = match ? decodeURIComponent(match[1]) : '';
  const leadId = document.body.dataset.leadId || '';
  const base = '/api/chat/' + encodeURIComponent(leadId);
  const auth = { Authorization: 'Bearer ' + token };
  const list = $('messages');
  const typing = $('typing');
  const form = $('composer');
  const input = $('message');
  const send = $('send');
  const errBox = $('chat-error');
  const conn = $('connection');
  const banner = $('booking-banner');
  const NOTE = "(The assistant couldn't finish — try again.)";
  const NET = "Couldn't send. Check your connection and try again.";
  const SLOW = "You're sending messages quickly — please wait a moment.";

  // id -> {el, base, stream}; base is the text the bubble had from history (a replayed turn
  // re-sends its deltas from the start, which must not double the text).
  const rendered = new Map();
  // Messages sent from this tab whose `user` echo has not arrived yet (an opt-out reply, or a
  // stream that is down, never echoes: then the history is merged in instead).
  const pendingEcho = new Set();
  let holding = null; // events queued while a `reset` reloads the history
  let busyTimer = 0;
  let es = null;
  let lastEventId = '';
  let wasOpen = false;
  let closedRetries = 0;
  let inFlight = false;
  let typingTimer = 0;
  let cooldownUntil = 0;
  // Until the history names it, the phone is the one the server put in the page.
  let phone = ($('location-phone').getAttribute('href') || '').replace(/^tel:/, '') || null;

  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  };
  const tel = (p) => 'tel:' + p.replace(/[^\d+]/g, '');

  const formatPhone = (p) => {
    const m = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(p || '');
    return m ? `(${m[1]}) ${m[2]}-${m[3]}` : p;
  };

  function applyLocation(loc) {
    if (!loc) return;
    if (loc.name) $('location-name').textContent = loc.name;
    const a = $('location-phone');
    if (loc.phone && a) {
      phone = loc.phone;
      a.href = tel(loc.phone);
      a.textContent = formatPhone(loc.phone);
      a.hidden = false;
    }
  }

  // Document scrolling: follow new content only when the reader is already near the end.
  const doc = document.scrollingElement || document.documentElement;
  const nearEnd = () => doc.scrollHeight - doc.scrollTop - doc.clientHeight < 120;
  function follow(fn) {
    const stick = nearEnd();
    const out = fn();
    if (stick) doc.scrollTop = doc.scrollHeight;
    return out;
  }

  function bubble(role, id, text) {
    if (id && rendered.has(id)) return rendered.get(id);
    const div = el('div', 'msg msg-' + (role === 'staff' ? 'assistant msg-staff' : role), text || '');
    if (id) div.dataset.messageId = id;
    const entry = { el: div, base: role === 'assistant' ? text || '' : '', stream: '' };
    if (id) rendered.set(id, entry);
    follow(() => list.appendChild(div));
    return entry;
  }

  function markError(div) {
    if (div.classList.contains('msg-error')) return;
    div.classList.add('msg-error');
    if (div.textContent.trim()) div.appendChild(el('span', 'msg-note', NOTE));
    else div.textContent = NOTE;
  }

  function renderHistory(messages) {
    for (const m of messages || []) {
      if (!m || !m.id || rendered.has(m.id)) continue;
      if (m.role === 'user') bubble('user', m.id, m.content);
      else if (m.role === 'staff') bubble('staff', m.id, m.content);
      else if (m.role === 'assistant') {
        if (!m.content && m.status === 'partial') continue; // in flight: arrives over SSE
        const b = bubble('assistant', m.id, m.content);
        if (m.status === 'error' || (m.status === 'partial' && m.content)) markError(b.el);
      }
    }
  }

  function setTyping(on) {
    clearTimeout(typingTimer);
    typing.hidden = !on;
    if (on) {
      follow(() => 0);
      typingTimer = setTimeout(() => { typing.hidden = true; }, 90000);
    }
  }

  // aria-busy keeps screen readers from reading every delta; they read the finished reply.
  function busy(on) {
    clearTimeout(busyTimer);
    if (on) {
      list.setAttribute('aria-busy', 'true');
      busyTimer = setTimeout(() => list.removeAttribute('aria-busy'), 60000);
    } else list.removeAttribute('aria-busy');
  }

  const showError = (text) => { errBox.textContent = text; };
  const clearError = () => { errBox.textContent = ''; };

  function expired() {
    if (es) es.close();
    es = null;
    const main = el('main', 'expired');
    main.append(el('h1', '', 'This chat link has expired'), el('p', '',
      'For your security, chat links only work for a while. Reply to our text message for a fresh link' +
      (phone ? ', or call us:' : ', or give the shop a call.')));
    if (phone) {
      const a = el('a', 'phone', 'Call ' + formatPhone(phone));
      a.href = tel(phone);
      main.append(a);
    }
    document.body.replaceChildren(main);
  }

  // Loads the history and renders what is not on screen yet. Returns true on success.
  async function loadHistory() {
    let res;
    try {
      res = await fetch(base + '/history', { headers: auth, cache: 'no-store' });
    } catch {
      showError("Couldn't load the conversation. Check your connection.");
      return false;
    }
    if (res.status === 401 || res.status === 403) { expired(); return false; }
    if (!res.ok) { showError("Couldn't load the conversation. We'll keep trying."); return false; }
    let data;
    try { data = await res.json(); } catch { return false; }
    if (errBox.textContent.startsWith("Couldn't load")) clearError();
    applyLocation(data.location);
    renderHistory(data.messages);
    return true;
  }

  async function start(delay = 0) {
    if (delay) await new Promise((r) => setTimeout(r, delay));
    if (await loadHistory()) {
      doc.scrollTop = doc.scrollHeight;
      connect();
    } else if (document.body.contains(list)) {
      start(Math.min((delay || 1000) * 2, 30000));
    }
  }

  const parse = (e) => {
    if (e.lastEventId) lastEventId = e.lastEventId;
    try { return JSON.parse(e.data) || {}; } catch { return {}; }
  };

  function connect() {
    let url = base + '/stream?token=' + encodeURIComponent(token);
    if (lastEventId) url += '&last_event_id=' + encodeURIComponent(lastEventId);
    es = new EventSource(url);
    es.onopen = () => { wasOpen = true; closedRetries = 0; conn.hidden = true; };
    es.onerror = (e) => {
      if (!es || e instanceof MessageEvent) return;
      if (es.readyState === EventSource.CONNECTING) {
        if (wasOpen) conn.hidden = false;
      } else if (es.readyState === EventSource.CLOSED) {
        // The server refused the stream (rate limit, expired link, restart): retry by hand,
        // resuming after the last event seen; check the link after repeated failures.
        conn.hidden = !wasOpen;
        es = null;
        closedRetries += 1;
        const wait = Math.min(2000 * 2 ** closedRetries, 30000);
        setTimeout(async () => {
          if (closedRetries >= 3 && !(await loadHistory()) && !document.body.contains(list)) return;
          connect();
        }, wait);
      }
    };
    // Named events are MessageEvents; a bare Event named 'error' is a connection error.
    const on = (name, fn) => es.addEventListener(name, (e) => {
      if (e instanceof MessageEvent) holding ? holding.push(() => fn(e)) : fn(e);
    });
    on('user', (e) => {
      const d = parse(e);
      if (d.message_id && !rendered.has(d.message_id)) bubble('user', d.message_id, d.text);
      pendingEcho.delete(d.message_id);
      setTyping(true);
    });
    on('delta', (e) => {
      const d = parse(e);
      if (!d.message_id || typeof d.text !== 'string') return;
      setTyping(false);
      busy(true);
      const b = rendered.get(d.message_id) || bubble('assistant', d.message_id, '');
      if (b.done) return;
      b.stream += d.text;
      follow(() => {
        if (!b.base) b.el.textContent = b.stream;
        else if (b.base.startsWith(b.stream)) { /* replay of text already shown */ }
        else if (b.stream.startsWith(b.base)) b.el.textContent = b.stream;
        else b.el.textContent = b.base + b.stream;
      });
    });
    on('done', (e) => {
      const d = parse(e);
      setTyping(false);
      busy(false);
      let b = rendered.get(d.message_id);
      const slots = Array.isArray(d.slots) ? d.slots.filter((s) => s && s.id && s.label) : [];
      if (!b && slots.length) b = bubble('assistant', d.message_id, '');
      if (!b || b.done) return;
      b.done = true;
      if (slots.length && !banner.textContent) follow(() => b.el.after(slotGroup(slots)));
    });
    on('error', (e) => {
      const d = parse(e);
      setTyping(false);
      busy(false);
      if (d.message_id_opt) {
        const b = rendered.get(d.message_id_opt) || bubble('assistant', d.message_id_opt, '');
        b.done = true;
        markError(b.el);
      } else {
        bubble('system', null, d.message || NOTE);
      }
    });
    on('booked', (e) => {
      const appt = parse(e).appointment || {};
      banner.textContent = "You're booked: " + (appt.label || 'see you soon');
      for (const btn of document.querySelectorAll('.slot')) btn.disabled = true;
    });
    on('reset', async () => {
      if (holding) return;
      holding = [];
      list.replaceChildren();
      rendered.clear();
      busy(false);
      await loadHistory();
      const queued = holding;
      holding = null;
      for (const run of queued) run();
    });
  }

  function slotGroup(slots) {
    const group = el('div', 'slots');
    group.setAttribute('role', 'group');
    group.setAttribute('aria-label', 'Available times');
    for (const s of slots) {
      const btn = el('button', 'slot', s.label);
      btn.type = 'button';
      btn.dataset.slotId = s.id;
      btn.addEventListener('click', async () => {
        const buttons = group.querySelectorAll('button');
        for (const x of buttons) x.disabled = true;
        if (!(await post({ message: 'Book ' + s.label, slot: s.id })) && !banner.textContent) {
          for (const x of buttons) x.disabled = false;
        }
      });
      group.appendChild(btn);
    }
    return group;
  }

  async function post(body) {
    if (inFlight) return false;
    if (cooldownUntil > Date.now()) { showError(SLOW); return false; }
    inFlight = true;
    send.disabled = true;
    clearError();
    setTyping(true);
    let res = null;
    try {
      res = await fetch(base, {
        method: 'POST',
        headers: { ...auth, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
    } catch {
      showError(NET);
    }
    inFlight = false;
    send.disabled = false;
    if (!res) { setTyping(false); return false; }
    let data = {};
    try { data = await res.json(); } catch { /* empty body */ }
    if (res.status === 202) {
      const id = data.message_id;
      if (id && !rendered.has(id)) {
        bubble('user', id, body.message);
        pendingEcho.add(id);
        setTimeout(() => {
          if (pendingEcho.delete(id)) { setTyping(false); loadHistory(); }
        }, 5000);
      }
      return true;
    }
    setTyping(false);
    if (res.status === 401 || res.status === 403) expired();
    else if (res.status === 429) {
      const secs = parseInt(res.headers.get('Retry-After') || '5', 10);
      cooldownUntil = Date.now() + Math.min(Number.isFinite(secs) ? secs : 5, 60) * 1000;
      showError(SLOW);
    } else if (res.status === 413 || res.status === 422) showError(data.error || 'That message is too long.');
    else showError(data.error || 'Something went wrong. Please try again.');
    return false;
  }

  function grow() {
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight + 2, 144) + 'px';
  }

  async function submit() {
    const raw = input.value;
    const text = raw.trim();
    if (!text || inFlight) return;
    if (await post({ message: text })) {
      // Keep anything typed while the message was on its way.
      input.value = input.value.startsWith(raw) ? input.value.slice(raw.length).trimStart() : input.value;
      grow();
    }
    input.focus();
  }

  form.addEventListener('submit', (e) => { e.preventDefault(); submit(); });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
  });
  input.addEventListener('input', grow);

  if (!token || !leadId) { expired(); return; }
  start();
})();
