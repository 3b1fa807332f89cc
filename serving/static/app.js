"use strict";
// Live segments: counts from GET /accounts/{account}/segments (or the admin's GET
// /segments), then kept current by GET /events (server-sent events, read with fetch so
// that the bearer token travels in a header, never in a URL).
//
// The token comes from the address's fragment (#token=...; a fragment is never sent to
// a server) and lives in this closure only: not in localStorage, sessionStorage or a
// cookie. The fragment is removed from the address bar and the history at once.
(() => {
  const FEED_MAX = 50;
  const params = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  const auth = token ? { Authorization: "Bearer " + token } : {};
  const account = fragment.get("account") || params.get("account_id") || onlyAccount(token);
  const query = account ? "?account_id=" + encodeURIComponent(account) : "";
  const snapshotPath = account ? "/accounts/" + encodeURIComponent(account) + "/segments"
    : "/segments";
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

  // The one account a token names, to scope the page without asking (not verified here:
  // the server verifies the token on every call).
  function onlyAccount(jwt) {
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(part));
      const accounts = Array.isArray(claims.accounts) ? claims.accounts : [];
      return accounts.length === 1 ? String(accounts[0]) : null;
    } catch (err) {
      return null;
    }
  }

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
    const id = document.createElement(builder ? "button" : "span");
    id.className = "segment-id";
    id.textContent = segmentId;
    if (builder) {
      id.type = "button";
      id.title = "Show members and their explanations";
      id.addEventListener("click", () => builder.showSegment(segmentId));
    }
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
    const response = await fetch(snapshotPath, { cache: "no-store", headers: auth });
    if (!response.ok) throw new Error("GET " + snapshotPath + ": " + response.status);
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

  function setStatus(text, className) {
    status.textContent = text;
    status.className = "status " + className;
  }

  // One server-sent event block ("event: change\ndata: {...}").
  function dispatch(block) {
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length || (type !== "change" && type !== "rule")) return;
    const event = JSON.parse(data.join("\n"));
    if (loaded) handle(type, event, true);
    else pending.push([type, event]);
  }

  async function follow() {
    for (;;) {
      try {
        const response = await fetch("/events" + query, { cache: "no-store", headers: auth });
        if (response.status === 401 || response.status === 404) {
          setStatus("the token was refused (expired, or not for this account): open the "
            + "address `segments token` or `segments demo` printed", "connecting");
          return;
        }
        if (!response.ok) throw new Error("GET /events: " + response.status);
        setStatus("live", "live");
        // (Re)connected: a fresh snapshot covers whatever the feed missed meanwhile.
        load().catch((err) => setStatus(String(err), "connecting"));
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            dispatch(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        }
      } catch (err) {
        // the stream broke: reconnect below, as EventSource would
      }
      setStatus("reconnecting…", "connecting");
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  // The rule builder (builder.js) for the token's account; null without one.
  const builder = token && account && window.SegmentsBuilder
    ? window.SegmentsBuilder.start({ account, auth }) : null;

  if (token) {
    follow();
  } else {
    setStatus("no token: open the address with #token=… that `segments demo` prints "
      + "(or make one with `segments token`)", "connecting");
  }

  setInterval(() => {
    const cutoff = Date.now() - 60000;
    while (recent.length && recent[0] < cutoff) recent.shift();
    document.getElementById("rate").textContent = recent.length
      ? "(" + recent.length + " in the last minute)" : "";
  }, 1000);
})();
