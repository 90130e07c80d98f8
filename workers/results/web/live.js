// On-air live results: renders an election's candidates from GET /api/v1/results/{id} and keeps
// them current from the WebSocket stream, without reloading. If the stream is unavailable it
// falls back to polling, so the screen never freezes on air.
(() => {
  'use strict';

  const api = '/api/v1/results/';
  const parts = location.pathname.split('/');
  const electionId = decodeURIComponent(parts[parts.length - 1] || '');

  // The token arrives as ?token=. It is moved out of the address bar (screenshots, screen
  // sharing) into sessionStorage, which survives a reload of this tab only.
  const tokenKey = 'results-token:' + electionId;
  const params = new URLSearchParams(location.search);
  let token = params.get('token') || '';
  if (token) {
    try { sessionStorage.setItem(tokenKey, token); } catch (e) { /* storage disabled: keep it in memory */ }
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
  } else {
    try { token = sessionStorage.getItem(tokenKey) || ''; } catch (e) { token = ''; }
  }

  // Okabe-Ito: distinguishable for viewers with colour-vision deficiencies.
  const palette = ['#E69F00', '#56B4E9', '#009E73', '#F0E442', '#0072B2', '#D55E00', '#CC79A7', '#BBBBBB'];
  const statusText = { ACTIVE: 'Live', CLOSED: 'Voting closed', SCHEDULED: 'Opens soon', CANCELLED: 'Cancelled' };
  const fmt = new Intl.NumberFormat(undefined);
  const pctFmt = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });

  const state = { title: '', status: '', candidates: new Map(), updated: null };
  const $ = (id) => document.getElementById(id);
  const rows = $('rows');

  function notice(text) {
    const n = $('notice');
    n.textContent = text || '';
    n.hidden = !text;
  }

  function setConn(kind, text) {
    document.body.dataset.conn = kind;
    $('conn').textContent = text;
  }

  // Counts only ever grow, so taking the maximum makes the order in which the REST answer
  // and stream messages arrive irrelevant.
  function setVotes(c, votes) {
    if (typeof votes === 'number' && votes > c.votes) c.votes = votes;
  }

  function candidate(id, name, party) {
    let c = state.candidates.get(id);
    if (!c) {
      c = { id, name: name || '…', party: party || '', votes: 0, el: null };
      state.candidates.set(id, c);
    } else if (name) {
      c.name = name;
      c.party = party || '';
    }
    return c;
  }

  function rowFor(c, colour) {
    if (c.el) return c.el;
    const li = document.createElement('li');
    li.className = 'row';
    li.dataset.candidateId = c.id;
    li.innerHTML = '<div class="who"><span class="name"></span><span class="party"></span></div>' +
      '<div class="track"><div class="bar"></div></div>' +
      '<div class="nums"><span class="pct"></span><span class="count"></span></div>';
    li.style.setProperty('--c', colour);
    c.el = li;
    return li;
  }

  function render() {
    document.title = (state.title ? state.title + ' – ' : '') + 'Live results';
    $('title').textContent = state.title || 'Live results';
    document.body.dataset.status = state.status;
    $('status').textContent = statusText[state.status] || '';

    // Ballot order (by name), not by votes: rows that jump around live are hard to follow.
    const list = [...state.candidates.values()].sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    const total = list.reduce((s, c) => s + c.votes, 0);
    const lead = list.reduce((m, c) => Math.max(m, c.votes), 0);
    list.forEach((c, i) => {
      const li = rowFor(c, palette[i % palette.length]);
      if (rows.children[i] !== li) rows.insertBefore(li, rows.children[i] || null);
      const pct = total > 0 ? (c.votes * 100) / total : 0;
      li.dataset.votes = String(c.votes);
      li.dataset.pct = pct.toFixed(2);
      li.classList.toggle('leader', lead > 0 && c.votes === lead);
      li.querySelector('.name').textContent = c.name;
      li.querySelector('.party').textContent = c.party;
      li.querySelector('.bar').style.width = pct.toFixed(2) + '%';
      li.querySelector('.pct').textContent = pctFmt.format(pct) + '%';
      li.querySelector('.count').textContent = fmt.format(c.votes);
    });
    const t = $('total');
    t.textContent = fmt.format(total);
    t.dataset.votes = String(total);
    if (state.updated) $('updated').textContent = 'Updated ' + state.updated.toLocaleTimeString();
  }

  let loading = null;
  function loadResults() {
    if (loading) return loading;
    loading = fetch(api + encodeURIComponent(electionId) + '?includePercentages=false', { cache: 'no-store' })
      .then(async (r) => {
        // Results exist once voting opens: before, the stream's STATUS_CHANGE brings the screen
        // live; after a cancellation there are none to show.
        if (r.status === 409) {
          state.status = 'SCHEDULED';
          notice('Voting has not opened yet.');
          render();
          return;
        }
        if (r.status === 404 && state.status === 'CANCELLED') {
          notice('This vote has been cancelled.');
          return;
        }
        if (r.status === 404 || r.status === 400) {
          notice('Election not found – check the link.');
          return;
        }
        if (!r.ok) throw new Error('results: HTTP ' + r.status);
        const body = await r.json();
        if (state.status === 'SCHEDULED') notice('');
        state.title = body.electionTitle;
        state.status = body.status;
        for (const t of body.totals) setVotes(candidate(t.candidateId, t.name, t.party), t.votes);
        state.updated = new Date();
        render();
      })
      .catch(() => { /* the next stream message or poll retries */ })
      .finally(() => { loading = null; });
    return loading;
  }

  function apply(msg) {
    switch (msg.type) {
      case 'VOTE_UPDATE': {
        let unknown = false;
        for (const u of msg.candidates || []) {
          if (!state.candidates.has(u.candidateId)) unknown = true;
          setVotes(candidate(u.candidateId), u.votes);
        }
        state.updated = new Date(msg.timestamp || Date.now());
        render();
        if (unknown) loadResults(); // a candidate we have no name for
        break;
      }
      case 'STATUS_CHANGE':
        state.status = msg.newStatus || state.status;
        render();
        loadResults();
        break;
      case 'ERROR':
        notice(msg.message || 'The results stream reported an error.');
        break;
      default: // HEARTBEAT: liveness only
    }
  }

  // Stream with reconnect (exponential backoff with jitter) and a watchdog: heartbeats come
  // every 15 s, so 45 s of silence means a dead connection that TCP has not noticed yet.
  let ws = null;
  let failures = 0;
  let lastMessage = 0;
  let pollTimer = null;

  function startPolling() {
    if (!pollTimer) pollTimer = setInterval(loadResults, 5000);
  }
  function stopPolling() {
    clearInterval(pollTimer);
    pollTimer = null;
  }

  async function diagnose() {
    // A refused handshake is invisible to the WebSocket API; a plain GET shows the reason.
    try {
      const r = await fetch(api + 'stream/' + encodeURIComponent(electionId) + '?token=' + encodeURIComponent(token), { cache: 'no-store' });
      if (r.status === 401) return 'The access token in this link was rejected or has expired – ask for a new link.';
      if (r.status === 429) return 'Too many screens are open with this token.';
      if (r.status === 404) return 'Election not found – check the link.';
    } catch (e) { /* network down: nothing more to learn */ }
    return '';
  }

  function connect() {
    if (!token) {
      setConn('offline', 'No stream token – updating every 5 s');
      notice('This link has no ?token=…: results refresh every 5 seconds instead of live.');
      startPolling();
      return;
    }
    setConn(failures ? 'offline' : 'connecting', failures ? 'Reconnecting…' : 'Connecting…');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    ws = new WebSocket(scheme + '//' + location.host + api + 'stream/' + encodeURIComponent(electionId) +
      '?token=' + encodeURIComponent(token));
    ws.onopen = () => {
      failures = 0;
      lastMessage = Date.now();
      setConn('live', 'Live');
      notice('');
      stopPolling();
      loadResults(); // names, title and status; counts merge with the stream's
    };
    ws.onmessage = (ev) => {
      lastMessage = Date.now();
      try { apply(JSON.parse(ev.data)); } catch (e) { /* ignore a malformed frame */ }
    };
    ws.onclose = async () => {
      ws = null;
      failures++;
      setConn('offline', 'Reconnecting…');
      startPolling();
      let delay = Math.min(30000, 1000 * 2 ** Math.min(failures - 1, 5)) * (0.75 + Math.random() / 2);
      if (failures >= 2) {
        const why = await diagnose();
        if (why) {
          notice(why);
          delay = 30000;
        }
      }
      setTimeout(connect, delay);
    };
  }

  setInterval(() => {
    if (ws && ws.readyState === WebSocket.OPEN && Date.now() - lastMessage > 45000) ws.close();
  }, 5000);

  if (!/^[0-9a-fA-F-]{36}$/.test(electionId)) {
    notice('Election not found – check the link.');
    return;
  }
  render();
  loadResults();
  connect();
})();
