/* qwave dashboard: polls GET /api/network every second and redraws the
 * topology, the link table, the alarm list and the relay counters in place
 * (no reload). The JSON contract is in docs/dashboard.md. Text goes into
 * the page with textContent only, never as HTML. */
'use strict';

(function () {
  const SVGNS = 'http://www.w3.org/2000/svg';
  const POLL_MS = 1000;
  const STALE_MS = 3000;
  const W = 640, H = 560, CX = W / 2, CY = H / 2, R = 205, NODE_R = 30;

  let lastOk = 0;
  let polls = 0;

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, parent, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  function html(tag, parent, text, cls) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }

  /* Digits grouped by a narrow no-break space: 1 234 567. */
  function group(n) {
    return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, '\u202f');
  }

  function kbit(bits) {
    return bits === null || bits === undefined ? '? kbit' : (bits / 1000).toFixed(1) + ' kbit';
  }

  function rate(bps) {
    return bps === null || bps === undefined ? '- bit/s' : group(bps) + ' bit/s';
  }

  function qber(q) {
    return q === null || q === undefined ? '- %' : (q * 100).toFixed(2) + ' %';
  }

  function when(iso) {
    return typeof iso === 'string' ? iso.replace('T', ' ').slice(0, 19) + ' UTC' : '?';
  }

  /* Red for an alarm other than the link being down (QBER: eavesdropper;
   * MAC failure; pool empty), grey for a link that is only down. */
  function linkState(l) {
    const other = (l.alarms || []).some(function (k) { return k !== 'link_down'; });
    if (l.qber_alarm || other) return 'alarm';
    return l.up ? 'up' : 'down';
  }

  /* Nodes on a circle in ID order, the first at the top, clockwise: the
   * node serves the whole network from its link-state database, so every
   * node's page draws the same picture (a ring named in order stays a
   * ring, a chain an open polygon). */
  function layout(nodes) {
    const pos = {};
    const n = nodes.length;
    const sorted = nodes.slice().sort(function (x, y) { return x.id < y.id ? -1 : x.id > y.id ? 1 : 0; });
    sorted.forEach(function (node, i) {
      const a = -Math.PI / 2 + (n ? 2 * Math.PI * i / n : 0);
      pos[node.id] = n === 1 ? { x: CX, y: CY } : { x: CX + R * Math.cos(a), y: CY + R * Math.sin(a) };
    });
    return pos;
  }

  function poolBar(g, x, y, bits, max) {
    const bw = 64, bh = 9;
    const b = el('g', { class: 'poolbar' }, g);
    el('rect', { class: 'bg', x: x - bw / 2, y: y - bh / 2, width: bw, height: bh, rx: 2 }, b);
    const f = bits && max ? Math.max(2, bw * Math.min(1, bits / max)) : 0;
    el('rect', { class: 'fg', x: x - bw / 2, y: y - bh / 2, width: f, height: bh, rx: 2 }, b);
    /* the figure on a white plate: a link may run right through it */
    el('rect', { class: 'plate', x: x - bw / 2 - 3, y: y + bh / 2 + 1, width: bw + 6, height: 15, rx: 3 }, b);
    el('text', { x: x, y: y + bh / 2 + 12.5 }, b, kbit(bits));
  }

  function drawGraph(s) {
    const svg = $('graph');
    clear(svg);
    const pos = layout(s.nodes);
    const gl = el('g', {}, svg), gp = el('g', {}, svg), gn = el('g', {}, svg), gt = el('g', {}, svg);
    let max = 0;
    s.links.forEach(function (l) {
      [l.pool_bits.a, l.pool_bits.b].forEach(function (v) { if (v > max) max = v; });
    });
    s.links.forEach(function (l) {
      const a = pos[l.a], b = pos[l.b];
      if (!a || !b) return;
      const st = linkState(l);
      el('line', { class: 'link ' + st + (l.up ? '' : ' off'), x1: a.x, y1: a.y, x2: b.x, y2: b.y }, gl)
        .appendChild(el('title', {}, null, l.a + '-' + l.b + ': ' + st));
      /* Each end's pool sits on the link, a third of the way out. */
      poolBar(gp, a.x + (b.x - a.x) * 0.3, a.y + (b.y - a.y) * 0.3 - 6, l.pool_bits.a, max);
      poolBar(gp, b.x + (a.x - b.x) * 0.3, b.y + (a.y - b.y) * 0.3 - 6, l.pool_bits.b, max);
      const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
      const lab = el('g', { class: 'label ' + st }, gt);
      el('rect', { x: mx - 52, y: my - 19, width: 104, height: 38, rx: 4 }, lab);
      el('text', { x: mx, y: my - 3, class: l.qber_alarm ? 'qber-alarm' : '' }, lab, 'QBER ' + qber(l.qber));
      el('text', { x: mx, y: my + 13 }, lab, rate(l.key_rate_bps));
    });
    s.nodes.forEach(function (n) {
      const p = pos[n.id];
      const cls = 'node ' + (n.up ? 'up' : 'down') + (n.alarms && n.alarms.length ? ' alarmed' : '') +
        (n.id === s.self ? ' self' : '');
      const g = el('g', { class: cls }, gn);
      el('circle', { cx: p.x, cy: p.y, r: NODE_R }, g);
      el('text', { x: p.x, y: p.y }, g, n.id);
    });
  }

  function drawLinks(s) {
    const tb = $('links').tBodies[0];
    clear(tb);
    s.links.forEach(function (l) {
      const tr = html('tr', tb);
      const st = linkState(l);
      html('td', tr, l.a + ' \u2013 ' + l.b);
      html('td', tr, st === 'alarm' ? (l.up ? 'ALARM' : 'ALARM (down)') : st, 'state-' + st);
      html('td', tr, qber(l.qber), l.qber_alarm ? 'state-alarm' : '');
      html('td', tr, rate(l.key_rate_bps));
      html('td', tr, kbit(l.pool_bits.a) + ' / ' + kbit(l.pool_bits.b));
      html('td', tr, l.length_km === null ? '-' : l.length_km.toFixed(1) + ' km');
    });
  }

  function drawAlarms(s) {
    const ul = $('alarms');
    clear(ul);
    const list = s.alarms.slice().sort(function (x, y) { return x.ts < y.ts ? 1 : x.ts > y.ts ? -1 : 0; });
    $('alarm-count').textContent = list.length ? String(list.length) : '';
    if (!list.length) {
      html('li', ul, 'no alarms', 'none');
      return;
    }
    list.forEach(function (a) {
      const li = html('li', ul, undefined, a.severity);
      const t = html('time', li, when(a.ts));
      t.setAttribute('datetime', a.ts);
      html('span', li, a.severity, 'sev');
      const where = a.link ? 'link ' + a.link : a.node ? 'node ' + a.node : '';
      html('b', li, a.kind + (where ? ' \u00b7 ' + where : ''));
      if (a.message) li.appendChild(document.createTextNode(': ' + a.message));
    });
  }

  function drawRelays(s) {
    const dl = $('relays');
    clear(dl);
    const r = s.relays || {};
    [['sent', r.sent], ['forwarded', r.forwarded], ['received', r.received], ['failed', r.failed],
     ['auth failures', r.auth_failures], ['bits used', r.bits_consumed === undefined ? undefined : kbit(r.bits_consumed)]]
      .forEach(function (p) {
        html('dt', dl, p[0]);
        html('dd', dl, p[1] === undefined ? '-' : String(p[1]));
      });
  }

  function render(s) {
    $('self').textContent = s.self ? 'node ' + s.self : '';
    drawGraph(s);
    drawLinks(s);
    drawAlarms(s);
    drawRelays(s);
    $('updated').textContent = 'state of ' + when(s.generated_at) + ' (update ' + polls + ')';
  }

  function setStatus() {
    const st = $('status');
    const age = Date.now() - lastOk;
    if (!lastOk) {
      st.className = 'status wait';
      st.textContent = 'connecting\u2026';
    } else if (age > STALE_MS) {
      st.className = 'status stale';
      st.textContent = 'no answer for ' + Math.round(age / 1000) + ' s';
    } else {
      st.className = 'status ok';
      st.textContent = 'live';
    }
  }

  async function poll() {
    try {
      const resp = await fetch('/api/network', { cache: 'no-store', credentials: 'same-origin' });
      if (!resp.ok) throw new Error('HTTP ' + resp.status);
      const s = await resp.json();
      polls++;
      render(s);
      lastOk = Date.now();
    } catch (e) {
      /* keep the last picture; the status badge turns red */
    }
    setStatus();
    setTimeout(poll, POLL_MS);
  }

  document.addEventListener('DOMContentLoaded', poll);
}());
