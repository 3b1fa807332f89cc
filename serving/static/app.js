"use strict";
// Live segments: counts from GET /segments, then kept current by GET /events (SSE).
(() => {
  const FEED_MAX = 50;
  const params = new URLSearchParams(location.search);
  const account = params.get("account_id");
  const query = account ? "?account_id=" + encodeURIComponent(account) : "";
  const tbody = document.querySelector("#segments tbody");
  const feed = document.getElementById("feed");
  const status = document.getElementById("status");
  const rows = new Map();
  const gone = new Map(); // removed segment -> seq of its removal
  const recent = [];
  const pending = []; // events that arrived while the snapshot loaded
  const inFeed = new Set(); // seqs of the changes listed (a reconnect resends recent ones)
  let snapshotSeq = 0;
  let loaded = false;

  const key = (accountId, segmentId) => accountId + "\u001f" + segmentId;

  function cell(tr, text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    if (text !== undefined) td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function row(accountId, segmentId) {
    const k = key(accountId, segmentId);
    let tr = rows.get(k);
    if (tr) return tr;
    tr = document.createElement("tr");
    tr.dataset.account = accountId;
    tr.dataset.segment = segmentId;
    cell(tr, accountId);
    const seg = cell(tr);
    const id = document.createElement("span");
    id.className = "segment-id";
    id.textContent = segmentId;
    const name = document.createElement("span");
    name.className = "segment-name";
    seg.append(id, name);
    cell(tr, "", "filter");
    cell(tr, "0", "num count");
    const after = [...rows.keys()].sort().find((other) => other > k);
    tbody.insertBefore(tr, after ? rows.get(after) : null);
    rows.set(k, tr);
    refreshTotals();
    return tr;
  }

  function removeRow(accountId, segmentId, seq) {
    const k = key(accountId, segmentId);
    const tr = rows.get(k);
    if (tr) { tr.remove(); rows.delete(k); refreshTotals(); }
    gone.set(k, seq);
  }

  // Every write has a seq; show an event only if it is newer than what is on screen.
  function isNewer(event) {
    const k = key(event.account_id, event.segment_id);
    const tr = rows.get(k);
    const shown = tr ? Number(tr.dataset.seq) : (gone.get(k) || snapshotSeq);
    return event.seq > shown;
  }

  function setCount(tr, count, flash) {
    const td = tr.querySelector(".count");
    if (td.textContent === String(count)) return;
    td.textContent = String(count);
    if (flash) {
      tr.classList.remove("flash");
      void tr.offsetWidth; // restart the animation
      tr.classList.add("flash");
    }
  }

  function setSegment(segment, flash) {
    const tr = row(segment.account_id, segment.segment_id);
    const rule = segment.rule || {};
    tr.querySelector(".segment-name").textContent = rule.name || "";
    tr.querySelector(".filter").textContent = rule.filter || "";
    tr.dataset.seq = String(segment.seq);
    setCount(tr, segment.member_count, flash);
  }

  function handle(type, event, live) {
    if (type === "change" && !inFeed.has(event.seq)) {
      if (inFeed.size > 1000) inFeed.clear();
      inFeed.add(event.seq);
      addToFeed(event);
      if (live) recent.push(Date.now());
    }
    if (!isNewer(event)) return; // the count on screen is already newer
    if (type === "change") {
      const tr = row(event.account_id, event.segment_id);
      tr.dataset.seq = String(event.seq);
      setCount(tr, event.member_count, true);
    } else if (event.rule === null && event.member_count === 0) {
      removeRow(event.account_id, event.segment_id, event.seq);
    } else {
      setSegment(event, true);
    }
  }

  function refreshTotals() {
    document.getElementById("segment-total").textContent = rows.size ? "(" + rows.size + ")" : "";
    document.getElementById("empty").hidden = rows.size > 0;
  }

  function addToFeed(change) {
    const li = document.createElement("li");
    li.className = change.change;
    const time = document.createElement("time");
    time.dateTime = change.at;
    time.textContent = (change.at || "").slice(11, 19);
    time.title = change.at;
    const badge = document.createElement("span");
    badge.className = "badge " + change.change;
    badge.textContent = change.change;
    const who = document.createElement("span");
    who.className = "who";
    const email = document.createElement("span");
    email.className = "email";
    email.textContent = change.email;
    const where = document.createElement("span");
    where.className = "where";
    where.textContent = change.account_id + " / " + change.segment_id + " · " + change.cause
      + " · " + change.member_count + " members";
    who.append(email, where);
    li.append(time, badge, who);
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > FEED_MAX) feed.lastChild.remove();
    document.getElementById("feed-empty").hidden = true;
  }

  async function load() {
    loaded = false;
    const response = await fetch("/segments" + query, { cache: "no-store" });
    if (!response.ok) throw new Error("GET /segments: " + response.status);
    const doc = await response.json();
    tbody.replaceChildren();
    rows.clear();
    gone.clear();
    snapshotSeq = doc.seq;
    doc.segments.forEach((segment) => setSegment(segment, false));
    refreshTotals();
    loaded = true;
    pending.splice(0).forEach(([type, event]) => handle(type, event, false));
    document.body.dataset.loaded = "true";
  }

  const source = new EventSource("/events" + query);
  source.addEventListener("open", () => {
    status.textContent = "live";
    status.className = "status live";
    // (Re)connected: a fresh snapshot covers whatever the feed missed meanwhile.
    load().catch((err) => {
      status.textContent = String(err);
      status.className = "status connecting";
    });
  });
  source.addEventListener("error", () => {
    status.textContent = "reconnecting…";
    status.className = "status connecting";
  });
  for (const type of ["change", "rule"]) {
    source.addEventListener(type, (message) => {
      const event = JSON.parse(message.data);
      if (loaded) handle(type, event, true);
      else pending.push([type, event]);
    });
  }

  setInterval(() => {
    const cutoff = Date.now() - 60000;
    while (recent.length && recent[0] < cutoff) recent.shift();
    document.getElementById("rate").textContent = recent.length
      ? "(" + recent.length + " in the last minute)" : "";
  }, 1000);
})();
