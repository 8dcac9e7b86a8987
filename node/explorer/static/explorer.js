/* perpchain explorer: keeps the server-rendered page live over the node's own WebSocket
   (JSON-RPC `subscribe` to new_heads and account:<hex>, and the same public read methods).
   Loaded from this origin only (Content-Security-Policy: script-src 'self'); it writes text
   with textContent, never HTML, and calls read methods only. */
(function () {
  "use strict";

  var body = document.body;
  var page = body.dataset.page;
  var market = body.dataset.market || null;
  var marketId = body.dataset.marketId || null;
  var account = body.dataset.account || null;
  var ws = null;
  var nextId = 1;
  var pending = {};
  var lastHead = null;
  var lastRefresh = 0;
  var refreshTimer = null;
  var txRate = { committed: null, at: 0 };
  var charts = {};
  var symbols = {}; // market id -> symbol (perp_getMarkets, once per connection)
  var MAX_ROWS = 20;
  var REFRESH_MS = 1000;

  // --- formatting (integers arrive as decimal strings in atoms) -----------------------

  function units(text, decimals, keep) {
    if (text === null || text === undefined) return "–";
    var s = String(text);
    var neg = s.charAt(0) === "-";
    if (neg) s = s.slice(1);
    if (!/^[0-9]+$/.test(s)) return String(text);
    while (s.length <= decimals) s = "0" + s;
    var whole = s.slice(0, s.length - decimals).replace(/^0+(?=[0-9])/, "");
    var frac = s.slice(s.length - decimals).replace(/0+$/, "");
    while (frac.length < keep) frac += "0";
    whole = whole.replace(/\B(?=([0-9]{3})+(?![0-9]))/g, ",");
    return (neg ? "-" : "") + whole + (frac ? "." + frac : "");
  }
  function quote(v) { return units(v, 6, 2); }
  function size(v) { return units(v, 8, 0); }
  function ppm(v) { return v === null || v === undefined ? "–" : units(v, 4, 0) + "%"; }
  function utc(ms) {
    var d = new Date(Number(ms));
    return isNaN(d.getTime()) ? "" : d.toISOString().replace("T", " ").replace("Z", "");
  }
  function short(text, keep) {
    text = String(text || "");
    keep = keep || 12;
    return text.length <= keep + 1 ? text : text.slice(0, keep) + "…";
  }

  // --- DOM helpers (text only) ---------------------------------------------------------

  function byId(id) { return document.getElementById(id); }
  function setText(id, text) { var el = byId(id); if (el) el.textContent = text; }
  function cell(text, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }
  function linkCell(text, href, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
    return td;
  }
  function accountCell(hex) {
    return hex ? linkCell(short(hex), "/account/" + encodeURIComponent(hex), "mono") : cell("–");
  }
  function row(cells, className) {
    var tr = document.createElement("tr");
    if (className) tr.className = className;
    cells.forEach(function (c) { tr.appendChild(c); });
    return tr;
  }
  function replaceRows(tableId, rows) {
    var table = byId(tableId);
    if (!table) return;
    var tbody = table.tBodies[0];
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    rows.forEach(function (r) { tbody.appendChild(r); });
  }
  function prependRow(tableId, tr, max) {
    var table = byId(tableId);
    if (!table) return;
    var tbody = table.tBodies[0];
    tbody.insertBefore(tr, tbody.firstChild);
    while (max && tbody.rows.length > max) tbody.deleteRow(tbody.rows.length - 1);
  }

  // --- JSON-RPC over the WebSocket ------------------------------------------------------

  function call(method, params) {
    return new Promise(function (resolve, reject) {
      if (!ws || ws.readyState !== WebSocket.OPEN) { reject(new Error("offline")); return; }
      var id = nextId++;
      pending[id] = { resolve: resolve, reject: reject };
      ws.send(JSON.stringify({ jsonrpc: "2.0", id: id, method: method, params: params || {} }));
    });
  }
  function quiet() {}

  function setLive(on) {
    var el = byId("live-ws");
    if (!el) return;
    el.textContent = on ? "live" : "offline";
    el.className = on ? "ws live" : "ws";
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + "/ws");
    ws.onopen = function () {
      setLive(true);
      call("subscribe", { topic: "new_heads" }).catch(quiet);
      call("perp_getMarkets").then(function (markets) {
        markets.forEach(function (m) { symbols[m.market_id] = m.market; });
      }).catch(quiet);
      if (account) call("subscribe", { topic: "account:" + account }).catch(quiet);
      refresh();
    };
    ws.onmessage = function (message) {
      var data;
      try { data = JSON.parse(message.data); } catch (e) { return; }
      if (data.method === "subscription" && data.params) {
        onNotification(data.params.topic || "", data.params.result);
        return;
      }
      var waiting = pending[data.id];
      if (!waiting) return;
      delete pending[data.id];
      if (data.error) waiting.reject(data.error); else waiting.resolve(data.result);
    };
    ws.onclose = function () {
      setLive(false);
      Object.keys(pending).forEach(function (id) { pending[id].reject(new Error("closed")); });
      pending = {};
      setTimeout(connect, 2000);
    };
  }

  function onNotification(topic, result) {
    if (topic === "new_heads") onHead(result);
    else if (topic.indexOf("account:") === 0) onAccountEvent(result);
  }

  // --- live updates ---------------------------------------------------------------------

  function onHead(header) {
    var previous = lastHead;
    lastHead = header;
    document.querySelectorAll("[data-live=height]").forEach(function (el) {
      el.textContent = header.height;
    });
    setText("ov-block-time", utc(header.time_ms));
    if (previous) setText("ov-interval", (Number(header.time_ms) - Number(previous.time_ms)) + " ms");
    setText("ov-root", header.state_root);
    if (page === "overview") addBlockRow(header);
    scheduleRefresh();
  }

  function addBlockRow(header) {
    // At once: the head's height on top; its tx counts (and any height this page missed)
    // come with the next refresh of the whole list (/blocks.json, at most once a second).
    var table = byId("latest-blocks");
    if (!table) return;
    var rows = table.tBodies[0].rows;
    // only the next height; after a gap (heads before the subscription, a reconnect) the
    // list is read again at once, so it never skips a height and never lags behind
    if (rows.length && Number(rows[0].cells[0].textContent) + 1 !== Number(header.height)) {
      if (Number(rows[0].cells[0].textContent) < Number(header.height)) refreshBlocks();
      return;
    }
    prependRow("latest-blocks", blockRow({
      height: header.height, hash: header.hash, time_ms: header.time_ms, txs: "…", rejected: "…",
    }), MAX_ROWS);
  }

  function blockRow(b) {
    return row([
      linkCell(b.height, "/block/" + encodeURIComponent(b.height), "num"),
      linkCell(short(b.hash, 16), "/block/" + encodeURIComponent(b.hash), "mono"),
      cell(utc(b.time_ms)),
      cell(b.txs, "num"),
      cell(b.rejected, "num"),
    ]);
  }

  var blocksInFlight = false;

  function topHeight() {
    var table = byId("latest-blocks");
    var rows = table ? table.tBodies[0].rows : [];
    return rows.length ? Number(rows[0].cells[0].textContent) : -1;
  }

  function refreshBlocks() {
    if (blocksInFlight || !byId("latest-blocks")) return;
    blocksInFlight = true;
    getJson("/blocks.json").then(function (data) {
      // The server's list, under the rows the heads added since it was read (if they follow
      // it height by height): the list never goes back, and never skips a height.
      var top = data.blocks.length ? Number(data.blocks[0].height) : -1;
      var newer = Array.prototype.filter.call(byId("latest-blocks").tBodies[0].rows, function (r) {
        return Number(r.cells[0].textContent) > top;
      });
      var follows = newer.every(function (r, i) {
        return Number(r.cells[0].textContent) === top + newer.length - i;
      });
      var rows = (follows ? newer : []).concat(data.blocks.map(blockRow));
      replaceRows("latest-blocks", rows.slice(0, MAX_ROWS));
    }).catch(quiet).then(function () {
      blocksInFlight = false;
      // a head that came while the list was read and could not be added: read it again
      if (lastHead && Number(lastHead.height) > topHeight()) setTimeout(refreshBlocks, 100);
    });
  }

  function onAccountEvent(item) {
    // at once from the notification; the next refresh brings the list with its tx hashes
    prependRow("fills", eventRow(item), 200);
    scheduleRefresh();
  }

  function scheduleRefresh() {
    if (refreshTimer) return;
    var wait = Math.max(0, lastRefresh + REFRESH_MS - Date.now());
    refreshTimer = setTimeout(function () { refreshTimer = null; refresh(); }, wait);
  }

  function refresh() {
    lastRefresh = Date.now();
    call("node_status").then(showStatus).catch(quiet);
    if (page === "overview") { refreshPeers(); refreshBlocks(); }
    if (page === "market" && market) refreshMarket();
    if (page === "account" && account) refreshAccount();
  }

  function showStatus(status) {
    var mode = byId("live-mode");
    if (mode) { mode.textContent = status.mode; mode.className = "mode mode-" + status.mode; }
    var ovMode = byId("ov-mode");
    if (ovMode) { ovMode.textContent = status.mode; ovMode.className = "mode mode-" + status.mode; }
    var halted = byId("banner-halted");
    if (halted) {
      halted.hidden = status.mode !== "halted";
      setText("banner-halted-reason", status.halt_reason || "");
    }
    var maintenance = byId("banner-maintenance");
    if (maintenance) {
      maintenance.hidden = status.mode !== "maintenance";
      var w = status.maintenance;
      setText("banner-maintenance-reason", w ? w.reason + " (checkpoint " + w.checkpoint + ")" : "");
    }
    setText("ov-committed", status.committed_txs);
    setText("ov-mempool", status.mempool_size);
    var now = Date.now();
    var committed = Number(status.committed_txs);
    if (txRate.committed !== null && now - txRate.at >= 900) {
      var rate = ((committed - txRate.committed) * 1000 / (now - txRate.at)).toFixed(1);
      setText("live-txs", rate);
      setText("ov-txs", rate);
    }
    if (txRate.committed === null || now - txRate.at >= 900) txRate = { committed: committed, at: now };
  }

  function refreshPeers() {
    fetch("/peers.json", { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (data) {
      var table = byId("peers");
      if (!table) return;
      var tbody = table.tBodies[0];
      while (tbody.rows.length > 1) tbody.deleteRow(1);
      data.peers.forEach(function (p) {
        tbody.appendChild(row([
          cell(p.url, "mono"),
          cell(p.height === null ? "–" : p.height, "num"),
          cell(p.mode),
          cell(p.agrees, "agree-" + p.agrees),
        ]));
      });
    }).catch(quiet);
  }

  // --- market ----------------------------------------------------------------------------

  function refreshMarket() {
    call("perp_getMarket", { market: market }).then(function (m) {
      setText("mk-mode", m.mode);
      setText("mk-oracle", quote(m.oracle_price));
      setText("mk-oracle-time", utc(m.oracle_time_ms));
      setText("mk-bid", m.best_bid ? quote(m.best_bid) : "–");
      setText("mk-ask", m.best_ask ? quote(m.best_ask) : "–");
      setText("mk-oi", size(m.open_interest));
      setText("mk-index", quote(m.funding_index));
      setText("mk-ticks", m.funding_ticks);
    }).catch(quiet);
    call("perp_getOrderBook", { market: market, depth: 20 }).then(showBook).catch(quiet);
    call("perp_getFundingHistory", { market: market, limit: 500 }).then(showFunding).catch(quiet);
    if (marketId) {
      getJson("/events.json?market=" + encodeURIComponent(marketId)).then(function (data) {
        replaceRows("market-fills", data.fills.map(eventRow));
      }).catch(quiet);
    }
  }

  function getJson(path) {
    return fetch(path, { cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error(path + ": HTTP " + r.status);
      return r.json();
    });
  }

  function eventRow(e) {
    return row([
      linkCell(e.height, "/block/" + encodeURIComponent(e.height)),
      cell(e.kind),
      cell(e.market_id === "0" ? "" : symbols[e.market_id] || e.market_id),
      accountCell(e.account),
      accountCell(e.counterparty),
      cell(size(e.size_atoms), "num"),
      cell(quote(e.price_quote), "num"),
      cell(quote(e.amount_quote), "num"),
      e.tx_hash ? linkCell(short(e.tx_hash, 10), "/tx/" + encodeURIComponent(e.tx_hash), "mono") : cell(""),
    ]);
  }

  function showBook(book) {
    replaceRows("book-bids", book.bids.map(function (l) {
      return row([cell(quote(l[0]), "num bid"), cell(size(l[1]), "num")]);
    }));
    replaceRows("book-asks", book.asks.map(function (l) {
      return row([cell(quote(l[0]), "num ask"), cell(size(l[1]), "num")]);
    }));
    depthChart(book);
  }

  function showFunding(ticks) {
    if (ticks.length) setText("mk-rate", ppm(ticks[ticks.length - 1].rate_ppm));
    fundingChart(ticks);
  }

  function chartWidth(el) { return Math.max(300, el.clientWidth - 14); }

  function fundingChart(ticks) {
    var el = byId("chart-funding");
    if (!el || typeof uPlot === "undefined") return;
    var data = [
      ticks.map(function (t) { return Number(t.time_ms) / 1000; }),
      ticks.map(function (t) { return Number(t.funding_index) / 1e6; }),
      ticks.map(function (t) { return Number(t.price) / 1e6; }),
    ];
    if (charts.funding) { charts.funding.setData(data); return; }
    charts.funding = new uPlot({
      width: chartWidth(el),
      height: 280,
      scales: { x: { time: true }, index: {}, price: {} },
      series: [
        {},
        { label: "funding index (USD)", scale: "index", stroke: "#2454d6", width: 2 },
        { label: "oracle price (USD)", scale: "price", stroke: "#c27c0e", width: 1.5 },
      ],
      axes: [
        {},
        { scale: "index", label: "funding index", size: 70 },
        { scale: "price", side: 1, label: "oracle price", size: 80, labelGap: 8, grid: { show: false } },
      ],
    }, data, el);
  }

  function depthChart(book) {
    var el = byId("chart-depth");
    if (!el || typeof uPlot === "undefined") return;
    // x ascending: the bids from the lowest (their depth counted from the best bid down),
    // then the asks from the best (depth counted up)
    var xs = [], bidDepth = [], askDepth = [];
    var bidPoints = [];
    var total = 0;
    book.bids.forEach(function (l) { total += Number(l[1]); bidPoints.push([Number(l[0]) / 1e6, total / 1e8]); });
    bidPoints.reverse().forEach(function (pt) { xs.push(pt[0]); bidDepth.push(pt[1]); askDepth.push(null); });
    total = 0;
    book.asks.forEach(function (l) { total += Number(l[1]); xs.push(Number(l[0]) / 1e6); bidDepth.push(null); askDepth.push(total / 1e8); });
    var data = [xs, bidDepth, askDepth];
    if (charts.depth) { charts.depth.setData(data); return; }
    var stepped = uPlot.paths && uPlot.paths.stepped;
    charts.depth = new uPlot({
      width: chartWidth(el),
      height: 280,
      scales: { x: { time: false } },
      series: [
        { label: "price (USD)" },
        { label: "bids (cumulative)", stroke: "#0b8a4a", fill: "rgba(11,138,74,0.15)", paths: stepped ? stepped({ align: -1 }) : undefined },
        { label: "asks (cumulative)", stroke: "#c62f2f", fill: "rgba(198,47,47,0.15)", paths: stepped ? stepped({ align: 1 }) : undefined },
      ],
      axes: [{ label: "price" }, { label: "size" }],
    }, data, el);
  }

  // --- account ---------------------------------------------------------------------------

  function entryPrice(cost, sizeAtoms) {
    var n = BigInt(sizeAtoms);
    if (n < 0n) n = -n;
    var c = BigInt(cost);
    if (c < 0n) c = -c;
    return n === 0n ? "–" : quote((c * 100000000n / n).toString());
  }

  function refreshAccount() {
    call("perp_getAccount", { address: account }).then(function (a) {
      setText("ac-collateral", quote(a.collateral));
      setText("ac-equity", quote(a.equity));
      setText("ac-im", quote(a.initial_margin));
      setText("ac-mm", quote(a.maintenance_margin));
      replaceRows("positions", a.positions.map(function (p) {
        var long = p.size.charAt(0) !== "-";
        return row([
          linkCell(p.market, "/market/" + encodeURIComponent(p.market)),
          cell(long ? "long" : "short", long ? "bid" : "ask"),
          cell(size(p.size), "num"),
          cell(quote(p.cost), "num"),
          cell(entryPrice(p.cost, p.size), "num"),
          cell(quote(p.unsettled_funding), "num"),
        ]);
      }));
      getJson("/events.json?account=" + encodeURIComponent(account)).then(function (data) {
        replaceRows("fills", data.fills.map(eventRow));
        replaceRows("funding", data.funding.map(eventRow));
        setText("ac-funding-paid", quote(data.funding_paid_quote));
      }).catch(quiet);
      var none = byId("no-positions");
      if (none) none.hidden = a.positions.length > 0;
      replaceRows("orders", a.open_orders.map(function (o) {
        return row([
          cell(o.order_id, "num"),
          cell(symbols[o.market_id] || o.market_id),
          cell(o.side, o.side === "buy" ? "bid" : "ask"),
          cell(o.kind),
          cell(o.tif),
          cell(o.price === "0" ? "any" : quote(o.price), "num"),
          cell(o.trigger_price === "0" ? "–" : quote(o.trigger_price), "num"),
          cell(size(o.size), "num"),
          cell(o.reduce_only ? "yes" : "no"),
        ]);
      }));
    }).catch(quiet);
  }

  // --- start -----------------------------------------------------------------------------

  if (page !== "error") {
    connect();
    // A halted node or one in maintenance produces no head to refresh on: poll meanwhile.
    setInterval(function () {
      if (ws && ws.readyState === WebSocket.OPEN && Date.now() - lastRefresh > 2000) refresh();
    }, 1000);
  }
})();
