"use strict";
// The rule builder: filters, fields, operators and value shapes come from the rule's
// JSON Schema (/static/schema.json, i.e. rules/schema.json); every edit asks
// POST /accounts/{a}/segments/preview (debounced) for the exact count and a sample;
// Save is PUT /accounts/{a}/segments/{id}; the saved segment is polled until its status
// is `ready`; a member's explanation is GET .../segments/{id}/members/{email}.
//
// app.js calls SegmentsBuilder.start(...) with the account and the Authorization
// header; the token stays in these closures (never in a global, storage or a cookie).
window.SegmentsBuilder = (() => {
  const DEBOUNCE_MS = 350;
  const POLL_MS = 1000;
  const LABELS = {
    eq: "=", ne: "≠", gt: ">", gte: "≥", lt: "<", lte: "≤", between: "between",
    is: "is", is_not: "is not", in: "in", not_in: "not in", on: "on", before: "before",
    after: "after", within_last: "within the last", more_than_ago: "more than … ago",
  };
  const $ = (id) => document.getElementById(id);

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    (children || []).forEach((child) => node.append(child));
    return node;
  }

  function options(select, values, labels) {
    select.replaceChildren(...values.map((v) => el("option", {
      value: v, textContent: (labels && labels[v]) || v.replace(/_/g, " ") })));
  }

  // --- What the schema allows -------------------------------------------------------
  function vocabulary(schema) {
    const condition = schema.$defs.condition;
    const fields = condition.properties.field.enum;
    const onlyFor = {}; // field -> the filters it is allowed for
    for (const rule of schema.allOf || []) {
      const notFilters = rule.if.properties.filter.not.enum;
      const field = rule.then.properties.conditions.items.properties.field.not.const;
      onlyFor[field] = notFilters;
    }
    const byField = {};
    for (const rule of condition.allOf) {
      for (const field of rule.if.properties.field.enum) {
        byField[field] = { ops: rule.then.properties.op.enum, values: rule.then.allOf };
      }
    }
    return {
      filters: schema.properties.filter.enum,
      maxConditions: schema.properties.conditions.maxItems,
      fieldsFor: (filter) => fields.filter((f) => !onlyFor[f] || onlyFor[f].includes(filter)),
      opsFor: (field) => byField[field].ops,
      valueFor: (field, op) => {
        const hit = byField[field].values.find((r) => r.if.properties.op.enum.includes(op));
        return hit ? hit.then.properties.value : {};
      },
    };
  }

  // One input for a scalar of the schema's shape; `read` gives the JSON value.
  function scalarInput(shape, label, id) {
    const input = el("input", { id, required: true });
    input.setAttribute("aria-label", label);
    if (shape.format === "date") input.type = "date";
    else if (shape.type === "integer") { input.type = "number"; input.min = "0"; input.step = "1"; }
    else {
      input.type = "text";
      if (shape.anyOf) { input.inputMode = "decimal"; input.placeholder = "e.g. 49.99"; }
      else if (shape.pattern === "^[A-Za-z]{3}$") { input.placeholder = "usd"; input.size = 5; }
    }
    if (shape.description) input.title = shape.description;
    const read = () => (shape.type === "integer" && input.value !== ""
      ? Number(input.value) : input.value.trim());
    return { nodes: [input], read, inputs: [input] };
  }

  function valueInput(shape, label, id) {
    if (shape.type === "array" && shape.prefixItems) {
      const low = scalarInput(shape.prefixItems[0], label + " from", id + "-from");
      const high = scalarInput(shape.prefixItems[1], label + " to", id + "-to");
      return { nodes: [...low.nodes, el("span", { className: "and", textContent: "and" }),
        ...high.nodes], read: () => [low.read(), high.read()],
      inputs: [...low.inputs, ...high.inputs] };
    }
    if (shape.type === "array") {
      const input = el("input", { id, type: "text", required: true,
        placeholder: "comma, separated" });
      input.setAttribute("aria-label", label + " (comma separated)");
      return { nodes: [input], inputs: [input],
        read: () => input.value.split(",").map((s) => s.trim()).filter(Boolean) };
    }
    if (shape.type === "object") {
      const count = scalarInput(shape.properties.count, label + " count", id + "-count");
      const unit = el("select", { id: id + "-unit" });
      unit.setAttribute("aria-label", label + " unit");
      options(unit, shape.properties.unit.enum);
      unit.value = "days";
      return { nodes: [...count.nodes, unit], inputs: [...count.inputs, unit],
        read: () => ({ count: count.read(), unit: unit.value }) };
    }
    return scalarInput(shape, label, id);
  }

  function start({ account, auth, onSaved }) {
    const form = $("builder");
    const base = "/accounts/" + encodeURIComponent(account) + "/segments";
    const json = { ...auth, "Content-Type": "application/json" };
    let vocab = null;
    let timer = null;
    let asked = 0; // the latest preview request; older answers are dropped
    let serial = 0;
    const rows = []; // {li, field, op, value}

    const filter = $("rule-filter");
    const list = $("conditions");

    function rule() {
      return {
        name: $("rule-name").value.trim() || $("rule-id").value.trim() || "preview",
        filter: filter.value,
        conditions: rows.map((r) => ({ field: r.field.value, op: r.op.value,
          value: r.value.read() })),
      };
    }

    function showErrors(target, errors) {
      target.replaceChildren(...errors.map((e) => el("li", {
        textContent: (e.path || "/") + ": " + e.message })));
      target.hidden = errors.length === 0;
      document.querySelectorAll("#conditions li").forEach((li, i) => {
        const bad = errors.some((e) => (e.path || "").startsWith("/conditions/" + i + "/")
          || e.path === "/conditions/" + i);
        li.classList.toggle("invalid", bad);
      });
    }

    function setValue(row) {
      const id = "cond-" + row.n + "-value";
      const shape = vocab.valueFor(row.field.value, row.op.value);
      row.value = valueInput(shape, "Value of condition " + (rows.indexOf(row) + 1), id);
      row.valueBox.replaceChildren(...row.value.nodes);
    }

    function setOps(row) {
      const previous = row.op.value;
      const ops = vocab.opsFor(row.field.value);
      options(row.op, ops, LABELS);
      if (ops.includes(previous)) row.op.value = previous;
      setValue(row);
    }

    function renumber() {
      rows.forEach((row, i) => {
        row.legend.textContent = "Condition " + (i + 1);
        row.remove.setAttribute("aria-label", "Remove condition " + (i + 1));
      });
      $("add-condition").disabled = rows.length >= vocab.maxConditions;
      $("no-conditions").hidden = rows.length > 0;
    }

    function addCondition() {
      const n = ++serial;
      const field = el("select", { id: "cond-" + n + "-field" });
      const op = el("select", { id: "cond-" + n + "-op" });
      const legend = el("span", { className: "legend" });
      const remove = el("button", { type: "button", className: "remove", textContent: "×" });
      const valueBox = el("span", { className: "value" });
      const li = el("li", {}, [legend,
        el("label", { htmlFor: field.id, className: "sr-only", textContent: "Field" }), field,
        el("label", { htmlFor: op.id, className: "sr-only", textContent: "Operator" }), op,
        valueBox, remove]);
      const row = { n, li, field, op, valueBox, legend, remove, value: null };
      rows.push(row);
      options(field, vocab.fieldsFor(filter.value));
      setOps(row);
      field.addEventListener("change", () => { setOps(row); schedule(); });
      op.addEventListener("change", () => { setValue(row); schedule(); });
      remove.addEventListener("click", () => {
        rows.splice(rows.indexOf(row), 1);
        li.remove();
        renumber();
        schedule();
        $("add-condition").focus();
      });
      list.append(li);
      renumber();
      field.focus();
      return row;
    }

    function filterChanged() {
      const allowed = vocab.fieldsFor(filter.value);
      for (const row of rows) {
        const previous = row.field.value;
        options(row.field, allowed);
        if (allowed.includes(previous)) row.field.value = previous;
        else setOps(row);
      }
      schedule();
    }

    function schedule() {
      clearTimeout(timer);
      $("preview-count").textContent = "…";
      form.dataset.preview = "pending";
      timer = setTimeout(preview, DEBOUNCE_MS);
    }

    async function preview() {
      const mine = ++asked;
      let response;
      try {
        response = await fetch(base + "/preview", { method: "POST", headers: json,
          body: JSON.stringify(rule()), cache: "no-store" });
      } catch (err) {
        if (mine === asked) showPreview(null, "the query API did not answer");
        return;
      }
      const doc = await response.json().catch(() => ({}));
      if (mine !== asked) return; // a newer edit was previewed meanwhile
      if (response.status === 503) {
        const wait = Number(response.headers.get("Retry-After") || "1");
        showPreview(null, "a partition is restoring; retrying in " + wait + " s");
        timer = setTimeout(preview, wait * 1000);
      } else if (response.status === 422) {
        showPreview(null, "fix the rule to see a preview");
        showErrors($("preview-errors"), doc.errors || []);
      } else if (!response.ok) {
        showPreview(null, doc.error || "preview failed: " + response.status);
      } else {
        showErrors($("preview-errors"), []);
        showPreview(doc, "");
      }
    }

    function showPreview(doc, note) {
      $("preview-count").textContent = doc ? String(doc.count) : "–";
      $("preview-note").textContent = doc
        ? "contacts would be members now (as of " + doc.as_of.slice(0, 19).replace("T", " ")
          + " UTC)" : note;
      $("preview-sample").replaceChildren(...(doc ? doc.sample : []).map(
        (email) => el("li", { textContent: email })));
      form.dataset.preview = doc ? "ready" : "none";
    }

    // Saving over an existing segment replaces it: say so before, and make the write
    // conditional on the version seen (If-Match), so that an edit made meanwhile is a 409.
    let existing = null; // {id, version} of the segment the id names, if there is one
    let idTimer = null;
    function setExisting(found) {
      existing = found;
      $("rule-id-help").textContent = found
        ? "exists (version " + found.version + "): saving replaces it"
        : "letters, digits, . _ -";
      $("save").textContent = found ? "Replace segment" : "Save segment";
    }

    function checkId() {
      clearTimeout(idTimer);
      idTimer = setTimeout(async () => {
        const id = $("rule-id").value.trim();
        if (!/^[A-Za-z0-9._-]{1,128}$/.test(id)) { setExisting(null); return; }
        const response = await fetch(base + "/" + encodeURIComponent(id),
          { headers: auth, cache: "no-store" }).catch(() => null);
        const doc = response && response.ok ? await response.json() : {};
        if (id !== $("rule-id").value.trim()) return; // typed on meanwhile
        setExisting(doc.rule ? { id, version: doc.rule.version || 1 } : null);
      }, DEBOUNCE_MS);
    }

    async function save(event) {
      event.preventDefault();
      const id = $("rule-id").value.trim();
      const body = rule();
      const headers = existing && existing.id === id
        ? { ...json, "If-Match": String(existing.version) } : json;
      $("save-note").textContent = "Saving…";
      const response = await fetch(base + "/" + encodeURIComponent(id), {
        method: "PUT", headers, body: JSON.stringify(body), cache: "no-store" });
      const doc = await response.json().catch(() => ({}));
      if (response.status === 422) {
        showErrors($("save-errors"), doc.errors || []);
        $("save-note").textContent = "Not saved: the rule has errors.";
        return;
      }
      showErrors($("save-errors"), []);
      if (!response.ok) {
        $("save-note").textContent = "Not saved: " + (doc.error || response.status)
          + (response.status === 409 ? " (it was changed meanwhile: review, then save)" : "");
        if (response.status === 409) checkId();
        return;
      }
      setExisting({ id, version: doc.version });
      $("save-note").textContent = "Saved " + id + " (version " + doc.version + ").";
      if (onSaved) onSaved(id);
      watch(id, doc.version);
    }

    // The saved segment fills: its member count and status, until `ready`.
    let watching = null;
    async function watch(id, version) {
      watching = id;
      if (shown !== id) {
        $("members").replaceChildren();
        $("explanation").hidden = true;
      }
      for (;;) {
        if (watching !== id) return;
        const response = await fetch(base + "/" + encodeURIComponent(id),
          { headers: auth, cache: "no-store" }).catch(() => null);
        if (response && response.ok) {
          const doc = await response.json();
          const current = !doc.rule || doc.rule.version === undefined
            || doc.rule.version >= version;
          showSegment(id, current ? doc.status : "populating", doc.member_count);
          if (current && doc.status === "ready") { showMembers(id); return; }
        }
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
    }

    let shown = null; // the segment whose members are on screen
    function showSegment(id, status, count) {
      shown = id;
      $("members-panel").hidden = false;
      $("members-title").textContent = id;
      const badge = $("segment-status");
      badge.textContent = status;
      badge.className = "badge " + status;
      $("segment-count").textContent = count + " members";
      $("members-panel").dataset.status = status;
    }

    async function showMembers(id) {
      const response = await fetch(base + "/" + encodeURIComponent(id) + "/members?limit=50",
        { headers: auth, cache: "no-store" });
      if (!response.ok) return;
      const page = await response.json();
      $("members").replaceChildren(...page.members.map((m) => {
        const button = el("button", { type: "button", className: "member",
          textContent: m.email });
        button.dataset.email = m.email;
        button.addEventListener("click", () => explain(id, m.email));
        return el("li", {}, [button]);
      }));
      $("members-more").hidden = !page.next_cursor;
    }

    async function explain(id, email) {
      const box = $("explanation");
      const url = base + "/" + encodeURIComponent(id) + "/members/" + encodeURIComponent(email);
      box.hidden = false;
      box.dataset.state = "loading";
      $("explain-title").textContent = email;
      const response = await fetch(url, { headers: auth, cache: "no-store" });
      const doc = await response.json().catch(() => ({}));
      if (!response.ok) {
        $("explain-summary").textContent = doc.error || "no answer: " + response.status;
        box.dataset.state = "error";
        return;
      }
      const segment = await fetch(base + "/" + encodeURIComponent(id),
        { headers: auth, cache: "no-store" }).then((r) => r.json()).catch(() => ({}));
      renderExplanation(doc, (segment.rule || {}).conditions || []);
      box.dataset.state = "ready";
      $("explain-title").focus();
    }

    function describe(c) {
      const v = Array.isArray(c.value) ? c.value.join(c.op === "between" ? " and " : ", ")
        : typeof c.value === "object" ? c.value.count + " " + c.value.unit : String(c.value);
      return c.field.replace(/_/g, " ") + " " + (LABELS[c.op] || c.op) + " " + v;
    }

    function money(amount, currency) {
      if (amount === null || amount === undefined) return "";
      try {
        const format = new Intl.NumberFormat("en", { style: "currency",
          currency: (currency || "").toUpperCase() });
        const digits = format.resolvedOptions().maximumFractionDigits;
        return format.format(amount / 10 ** digits);
      } catch (err) {
        return amount + " " + (currency || "");
      }
    }

    function renderExplanation(doc, conditions) {
      const summary = doc.member
        ? "Member" + (doc.since ? " since " + doc.since : "")
        : "Not a member";
      $("explain-summary").textContent = summary + (doc.next_change_at
        ? " · time alone changes this at " + doc.next_change_at : "");
      $("explain-summary").className = doc.member ? "yes" : "no";
      $("explain-facts").replaceChildren(...doc.facts.map((fact) => {
        const failed = new Set(fact.failed_conditions);
        const checks = el("ul", { className: "checks" }, conditions.map((c, i) => el("li", {
          className: failed.has(i) ? "fail" : "pass",
          textContent: (failed.has(i) ? "✗ fails " : "✓ holds ") + describe(c) })));
        const head = el("p", { className: "fact-head" }, [
          el("strong", { textContent: fact.qualifies ? "qualifies" : "does not qualify" }),
          " · " + fact.occurred_at + " · " + money(fact.amount, fact.currency)
            + (fact.refund_amount !== undefined ? " (refund " + money(fact.refund_amount,
              fact.currency) + ")" : "")
            + (fact.plan ? " · plan " + fact.plan.join(", ") : "")]);
        const ids = el("p", { className: "muted ids", textContent: "Stripe events: "
          + (fact.stripe_event_ids.join(", ") || "none") + " · fact " + fact.fact_id });
        const li = el("li", { className: fact.qualifies ? "qualifies" : "fails" },
          [head, checks, ids]);
        return li;
      }));
      $("explain-none").hidden = doc.facts.length > 0;
    }

    fetch("/static/schema.json", { cache: "no-store" }).then((r) => r.json()).then((schema) => {
      vocab = vocabulary(schema);
      options(filter, vocab.filters);
      filter.addEventListener("change", filterChanged);
      $("add-condition").addEventListener("click", () => { addCondition(); schedule(); });
      $("rule-name").addEventListener("input", () => {
        const id = $("rule-id");
        if (!id.dataset.touched) {
          id.value = $("rule-name").value.toLowerCase().replace(/[^a-z0-9._-]+/g, "-")
            .replace(/^-+|-+$/g, "").slice(0, 128);
          checkId();
        }
      });
      $("rule-id").addEventListener("input", () => {
        $("rule-id").dataset.touched = "1";
        checkId();
      });
      form.addEventListener("input", (e) => {
        if (e.target.id !== "rule-name" && e.target.id !== "rule-id") schedule();
      });
      form.addEventListener("submit", save);
      $("explain-close").addEventListener("click", () => { $("explanation").hidden = true; });
      $("explain-form").addEventListener("submit", (e) => {
        e.preventDefault();
        if (shown) explain(shown, $("explain-email").value.trim());
      });
      form.hidden = false;
      $("builder-note").hidden = true;
      form.dataset.ready = "true";
      schedule();
    }).catch((err) => { $("builder-note").textContent = "Rule schema unavailable: " + err; });

    return { showSegment: (id) => watch(id, 0) };
  }

  return { start };
})();
