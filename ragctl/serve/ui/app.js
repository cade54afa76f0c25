/* ragctl console: a hand-written page over the service's JSON API (docs/api.md), no framework,
 * no build step. Every piece of data is put into the page with textContent or as an attribute
 * value of an element built here; nothing is ever parsed as HTML. The bearer token lives in
 * sessionStorage only (this tab), is sent as an Authorization header, never in a URL. */
"use strict";

(() => {
  const TOKEN_KEY = "ragctl.token";
  const ENTITY_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
  const PAGE = 50; // rows per page of entities and documents
  const BATCH_BYTES = 8 * 1024 * 1024; // one upload request carries at most this much (unless one file is bigger)
  const BATCH_FILES = 100;
  const POLL_MS = 700;
  const SETTLED = new Set(["indexed", "updated", "unchanged", "skipped", "failed", "cancelled"]);
  const JOB_FINISHED = new Set(["done", "failed", "cancelled"]);

  const $ = (id) => document.getElementById(id);
  const state = { authRequired: null, view: null, upload: [], uploading: false, jobs: new Map(), polling: false,
    flash: null, renders: {} };

  /**
   * Claims a region of the page (a table, the search results) for one render and returns "is this render
   * still the latest of that region?". Two renders of one view can overlap: the sign-in's route and the
   * hashchange of a navigation made meanwhile, or two quick clicks. Each clears its table, then awaits the
   * server; without this check both would append their rows (every document listed twice), and a slow
   * older answer could overwrite a newer one. A render that is no longer the latest writes nothing more.
   */
  function claim(region) {
    const ticket = (state.renders[region] || 0) + 1;
    state.renders[region] = ticket;
    return () => state.renders[region] === ticket;
  }

  /* ---------- DOM helpers: text only ---------- */

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function banner(message, kind) {
    const b = $("banner");
    b.textContent = message || "";
    b.className = kind === "info" ? "info" : "";
    b.hidden = !message;
  }

  const fmtInt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "–");

  function fmtBytes(n) {
    if (typeof n !== "number") return "–";
    if (n < 1024) return `${n} B`;
    const units = ["KB", "MB", "GB", "TB"];
    let v = n / 1024;
    let u = 0;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
    return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
  }

  const fmtTime = (s) => (s ? String(s).replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, " UTC") : "–");
  const enc = encodeURIComponent;

  /* ---------- the API ---------- */

  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  async function api(method, path, body, token) {
    const headers = token === undefined ? authHeaders() : (token ? { Authorization: `Bearer ${token}` } : {});
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, { method, headers, cache: "no-store", credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiError(0, "network", `the server cannot be reached (${err.message})`);
    }
    let data = null;
    try { data = await resp.json(); } catch (_) { data = null; }
    if (!resp.ok) {
      const e = (data && data.error) || {};
      const error = new ApiError(resp.status, e.code || `http_${resp.status}`, e.message || resp.statusText,
        resp.headers.get("Retry-After"));
      if (resp.status === 401 && token === undefined) signedOut("The server no longer accepts this token " +
        "(it is wrong, expired or was removed from the server's tokens). Sign in again.");
      throw error;
    }
    return data;
  }

  function report(err) {
    if (err instanceof ApiError && err.status === 401) return; // the sign-in form says it
    banner(err instanceof ApiError ? `${err.message} (${err.status || "network"} ${err.code})` : String(err));
  }

  /* ---------- sign-in ---------- */

  async function start() {
    wire();
    try {
      await api("GET", "/api/status", undefined, null); // no token: does this server want one?
      state.authRequired = false;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401) {
        state.authRequired = false;
        report(err);
      } else {
        state.authRequired = true;
      }
    }
    if (state.authRequired && !sessionStorage.getItem(TOKEN_KEY)) {
      signedOut("");
      return;
    }
    signedIn();
    route();
  }

  function signedIn() {
    $("nav").hidden = false;
    $("signout").hidden = !state.authRequired;
    $("who").textContent = state.authRequired ? "signed in with a token" : "open server (no token needed)";
  }

  function signedOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("nav").hidden = true;
    $("signout").hidden = true;
    $("who").textContent = "";
    banner("");
    show("signin");
    $("signin-error").textContent = message || "";
    $("token").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("token");
    const token = input.value.trim();
    $("signin-error").textContent = "";
    if (!token) return;
    try {
      await api("GET", "/api/entities?offset=0&limit=1", undefined, token);
    } catch (err) {
      $("signin-error").textContent = err instanceof ApiError && err.status === 401
        ? "This token was not accepted: it is wrong, or it is no longer configured on the server."
        : `Cannot sign in: ${err.message}`;
      input.select();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    input.value = "";
    signedIn();
    route();
  }

  /* ---------- views and the router (#/view/arg?params) ---------- */

  function show(view) {
    for (const section of document.querySelectorAll("section.view")) section.hidden = section.id !== `view-${view}`;
    const navView = view === "entity" ? "entities" : view;
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.dataset.view === navView) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if (state.view !== view) {
      state.view = view;
      if (view !== "signin") $("main").focus({ preventScroll: true });
    }
  }

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const q = raw.indexOf("?");
    const path = q < 0 ? raw : raw.slice(0, q);
    const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
    return { parts: path.split("/").map((p) => decodeURIComponent(p)), params };
  }

  function go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  function route() {
    if (state.authRequired && !sessionStorage.getItem(TOKEN_KEY)) return;
    banner(state.flash || "", "info"); // a message for the view we go to (after a delete), else none
    state.flash = null;
    const { parts, params } = parseHash();
    const run = { entity: () => showEntity(parts[1] || "", params), upload: () => showUpload(params),
      search: () => showSearch(params) }[parts[0]] || (() => showEntities(params));
    run().catch(report);
  }

  /* ---------- entities ---------- */

  async function showEntities(params) {
    show("entities");
    const q = params.get("q") || "";
    const page = Math.max(0, parseInt(params.get("page") || "0", 10) || 0);
    $("entities-q").value = q;
    const latest = claim("entities");
    const data = await api("GET", `/api/entities?offset=${page * PAGE}&limit=${PAGE}&q=${enc(q)}`);
    if (!latest()) return;
    let ids = Object.keys(data.entities || {}).sort();
    let total;
    if (typeof data.total === "number") {
      total = data.total; // the server pages and filters
    } else { // a server without paging answers every entity: page here
      const needle = q.toLowerCase();
      ids = ids.filter((id) => id.toLowerCase().includes(needle));
      total = ids.length;
      ids = ids.slice(page * PAGE, page * PAGE + PAGE);
    }
    rememberIds(ids);
    const body = $("entities-table").tBodies[0];
    clear(body);
    for (const id of ids) {
      const v = data.entities[id] || {};
      body.append(el("tr", {},
        el("th", { scope: "row" }, el("a", { href: `#/entity/${enc(id)}`, text: id })),
        el("td", { class: "num", text: fmtInt(v.documents) }),
        el("td", { class: "num", text: fmtInt(v.chunks) }),
        el("td", { class: "num", title: `${fmtInt(v.bytes)} bytes`, text: fmtBytes(v.bytes) }),
        el("td", { text: fmtTime(v.last_ingest) }),
        v.error ? el("td", { class: "error", text: v.error }) : el("td", { text: v.model || "–" })));
    }
    const totals = data.totals || {};
    $("entities-summary").textContent = total === 0
      ? (q ? `No entity id contains “${q}”.` : "No entities yet: upload files to create one.")
      : `${fmtInt(total)} entit${total === 1 ? "y" : "ies"}${q ? ` matching “${q}”` : ""}` +
        (q ? "" : ` · ${fmtInt(totals.documents)} documents · ${fmtInt(totals.chunks)} chunks · ${fmtBytes(totals.bytes)}`);
    pager("entities", page, total, (p) => `#/entities?q=${enc(q)}&page=${p}`);
  }

  function pager(prefix, page, total, hashFor) {
    const pages = Math.max(1, Math.ceil(total / PAGE));
    $(`${prefix}-page`).textContent = total ? `page ${page + 1} of ${pages}` : "";
    const prev = $(`${prefix}-prev`);
    const next = $(`${prefix}-next`);
    prev.disabled = page <= 0;
    next.disabled = page + 1 >= pages;
    prev.onclick = () => go(hashFor(page - 1));
    next.onclick = () => go(hashFor(page + 1));
  }

  function rememberIds(ids) {
    const list = $("entity-ids");
    clear(list);
    for (const id of ids) list.append(el("option", { value: id }));
  }

  /* ---------- one entity's documents ---------- */

  async function filesPage(id, offset, limit) {
    return api("GET", `/api/entities/${enc(id)}/files?offset=${offset}&limit=${limit}`);
  }

  /** The index of `path` in the entity's listing (sorted by path): a binary search with one-row pages. */
  async function locate(id, path) {
    let lo = 0;
    let hi = (await filesPage(id, 0, 1)).total;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const row = (await filesPage(id, mid, 1)).files[0];
      if (!row) hi = mid;
      else if (row.path < path) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  async function showEntity(id, params) {
    show("entity");
    $("entity-title").textContent = `Entity ${id}`;
    $("entity-upload").setAttribute("href", `#/upload?entity=${enc(id)}`);
    $("entity-search").setAttribute("href", `#/search?entity=${enc(id)}`);
    $("entity-delete").onclick = () => deleteEntity(id);
    const latest = claim("files");
    const body = $("files-table").tBodies[0];
    clear(body);
    $("entity-summary").textContent = "Loading…";
    showJobs(id).catch(report);
    let page = Math.max(0, parseInt(params.get("page") || "0", 10) || 0);
    const wanted = params.get("doc");
    let data;
    try {
      if (params.get("path")) page = Math.floor((await locate(id, params.get("path"))) / PAGE);
      data = await filesPage(id, page * PAGE, PAGE);
    } catch (err) {
      if (!latest()) return;
      if (err instanceof ApiError && err.status === 404) {
        $("entity-summary").textContent = "This entity has no documents (yet: an upload may still be indexing).";
        pager("files", 0, 0, () => "#/entities");
        return;
      }
      $("entity-summary").textContent = "";
      throw err;
    }
    if (!latest()) return;
    let found = null;
    for (const f of data.files) {
      const row = el("tr", { "data-doc": f.doc_id },
        el("th", { scope: "row", text: f.path }),
        el("td", { class: "num", title: f.bytes === null ? null : `${fmtInt(f.bytes)} bytes`, text: fmtBytes(f.bytes) }),
        el("td", { class: "num", text: fmtInt(f.chunks) }),
        el("td", { text: fmtTime(f.indexed_at) }),
        el("td", { class: "id", text: f.doc_id }),
        el("td", {}, el("button", { type: "button", class: "danger", "aria-label": `Delete ${f.path}`, text: "Delete",
          on: { click: () => deleteDocument(id, f) } })));
      if (wanted && f.doc_id === wanted) {
        row.classList.add("found");
        row.setAttribute("tabindex", "-1");
        found = row;
      }
      body.append(row);
    }
    const first = data.total ? data.offset + 1 : 0;
    $("entity-summary").textContent = `${fmtInt(data.total)} document${data.total === 1 ? "" : "s"}` +
      (data.total > PAGE ? ` · showing ${fmtInt(first)}–${fmtInt(data.offset + data.files.length)}` : "");
    pager("files", page, data.total, (p) => `#/entity/${enc(id)}?page=${p}`);
    if (found) { found.scrollIntoView({ block: "center" }); found.focus(); }
  }

  /** The entity's last 10 upload jobs, each with its files' counts and the reasons of those not indexed. */
  async function showJobs(id) {
    const latest = claim("jobs");
    const body = $("jobs-table").tBodies[0];
    clear(body);
    $("jobs-summary").textContent = "";
    const data = await api("GET", `/api/entities/${enc(id)}/jobs?limit=10`);
    if (!latest()) return;
    for (const job of data.jobs) {
      const counts = {};
      for (const f of job.files) counts[f.status || "waiting"] = (counts[f.status || "waiting"] || 0) + 1;
      const problems = el("td", {});
      for (const f of job.files) if (f.error) problems.append(el("div", { text: `${f.path}: ${f.error}` }));
      if (job.error) problems.append(el("div", { text: job.error }));
      body.append(el("tr", {},
        el("th", { scope: "row", class: "id", title: job.job_id, text: job.job_id.slice(0, 8) }),
        el("td", {}, el("span", { class: `status-${job.status}`, text: job.status })),
        el("td", { text: fmtTime(job.created_at) }),
        el("td", { text: [...SETTLED, "waiting"].filter((k) => counts[k]).map((k) => `${counts[k]} ${k}`).join(", ") }),
        problems));
    }
    $("jobs-summary").textContent = data.jobs.length
      ? `The ${data.jobs.length === 1 ? "last job" : `last ${data.jobs.length} jobs`} (finished jobs are kept 7 days).`
      : "No upload jobs in the last 7 days.";
  }

  function confirmDialog(text, okLabel) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  async function deleteDocument(id, file) {
    if (!(await confirmDialog(`Delete the document “${file.path}” from entity “${id}”? Its chunks leave the ` +
      "index; this cannot be undone.", "Delete document"))) return;
    try {
      await api("DELETE", `/api/entities/${enc(id)}/files/${enc(file.doc_id)}`);
    } catch (err) {
      report(err);
      return;
    }
    await showEntity(id, parseHash().params).catch(report);
    banner(`Deleted “${file.path}”.`, "info");
  }

  async function deleteEntity(id) {
    if (!(await confirmDialog(`Delete the entity “${id}” with all its documents, and cancel its unfinished ` +
      "uploads? This cannot be undone.", "Delete entity"))) return;
    let result;
    try {
      result = await api("DELETE", `/api/entities/${enc(id)}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 503) {
        banner(`${err.message} — try again in ${err.retryAfter || "a few"} s.`);
        return;
      }
      report(err);
      return;
    }
    const n = result.cancelled_jobs.length;
    state.flash = `Deleted entity “${id}”${n ? ` and cancelled ${n} unfinished upload job${n === 1 ? "" : "s"}` : ""}.`;
    go("#/entities");
  }

  /* ---------- upload ---------- */

  async function showUpload(params) {
    show("upload");
    const entity = params.get("entity");
    if (entity) $("upload-entity").value = entity;
    if (!$("entity-ids").options.length) {
      const data = await api("GET", `/api/entities?offset=0&limit=${PAGE}`);
      rememberIds(Object.keys(data.entities || {}).sort().slice(0, PAGE));
    }
  }

  function addFiles(list) { // list of {file, path}
    const byPath = new Map(state.upload.map((item) => [item.path, item]));
    const sorted = Array.from(list).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    for (const { file, path } of sorted) {
      const old = byPath.get(path);
      if (old && old.phase !== "pending" && !SETTLED.has(old.phase)) continue; // on its way: keep its row
      const item = { file, path, size: file.size, phase: "pending", jobId: null };
      item.bar = el("progress", { max: 1, value: 0, "aria-label": `upload progress of ${path}` });
      item.status = el("span", { text: "ready" });
      item.detail = el("td", {});
      item.row = el("tr", {}, el("th", { scope: "row", text: path }),
        el("td", { class: "num", text: fmtBytes(file.size) }), el("td", {}, item.bar), el("td", {}, item.status),
        item.detail);
      if (old) { old.row.replaceWith(item.row); state.upload[state.upload.indexOf(old)] = item; } else {
        state.upload.push(item);
        $("upload-table").tBodies[0].append(item.row);
      }
      byPath.set(path, item);
    }
    summarize();
  }

  function setStatus(item, status, detail) {
    item.status.textContent = status;
    item.status.className = `status-${status.split(" ")[0]}`;
    if (detail !== undefined) item.detail.textContent = detail || "";
  }

  function summarize() {
    const items = state.upload;
    if (!items.length) { $("upload-summary").textContent = "No files chosen."; return; }
    const counts = {};
    for (const item of items) counts[item.phase] = (counts[item.phase] || 0) + 1;
    const settled = items.filter((i) => SETTLED.has(i.phase)).length;
    const parts = Object.entries(counts).map(([k, v]) => `${v} ${k}`);
    const total = items.reduce((a, i) => a + i.size, 0);
    let line = `${items.length} file${items.length === 1 ? "" : "s"} (${fmtBytes(total)}): ${parts.join(", ")}.`;
    if (settled === items.length) line += ` All ${items.length} files settled.`;
    $("upload-summary").textContent = line;
  }

  async function filesFromDrop(dataTransfer) {
    // the entries must be taken before the first await: the DataTransfer is emptied afterwards
    const taken = [];
    const items = dataTransfer.items ? Array.from(dataTransfer.items) : [];
    const files = Array.from(dataTransfer.files || []);
    items.forEach((item, i) => {
      if (item.kind !== "file") return;
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      taken.push({ entry, file: item.getAsFile() || files[i] });
    });
    if (!items.length) for (const file of files) taken.push({ entry: null, file });
    const out = [];
    for (const { entry, file } of taken) {
      if (entry && entry.isDirectory) await walk(entry, out);
      else if (file) out.push({ file, path: file.webkitRelativePath || (entry ? entry.fullPath.replace(/^\/+/, "") : file.name) });
    }
    return out;
  }

  async function walk(dir, out) {
    const reader = dir.createReader();
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) return;
      for (const entry of batch) {
        if (entry.isDirectory) await walk(entry, out);
        else {
          const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
          out.push({ file, path: entry.fullPath.replace(/^\/+/, "") });
        }
      }
    }
  }

  async function startUpload(event) {
    event.preventDefault();
    const entity = $("upload-entity").value.trim();
    if (!ENTITY_RE.test(entity)) {
      banner("Entity: letters, digits, '.', '_', '-', at most 128, starting with a letter or digit.");
      $("upload-entity").focus();
      return;
    }
    const pending = state.upload.filter((i) => i.phase === "pending");
    if (!pending.length) { banner("Choose or drop files first."); return; }
    if (state.uploading) return;
    banner("");
    state.uploading = true;
    $("upload-start").disabled = true;
    try {
      const queue = batches(pending);
      while (queue.length) {
        const batch = queue.shift();
        const split = await sendBatch(entity, batch);
        if (split) queue.unshift(...split);
      }
    } finally {
      state.uploading = false;
      $("upload-start").disabled = false;
      summarize();
    }
  }

  function batches(items) {
    const out = [];
    let cur = [];
    let bytes = 0;
    for (const item of items) {
      if (cur.length && (bytes + item.size > BATCH_BYTES || cur.length >= BATCH_FILES)) { out.push(cur); cur = []; bytes = 0; }
      cur.push(item);
      bytes += item.size;
    }
    if (cur.length) out.push(cur);
    return out;
  }

  function post(entity, batch) {
    return new Promise((resolve) => {
      const form = new FormData();
      for (const item of batch) form.append("file", item.file, item.file.name);
      for (const item of batch) form.append("path", item.path); // paired in order, after the bytes
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `/api/entities/${enc(entity)}/files`);
      for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
      const total = batch.reduce((a, i) => a + i.size, 0) || 1;
      xhr.upload.onprogress = (e) => {
        if (!e.lengthComputable) return;
        let sent = (e.loaded / e.total) * total; // the parts go in order: fill the files one after another
        for (const item of batch) {
          const part = Math.max(0, Math.min(item.size, sent));
          item.bar.value = item.size ? part / item.size : 1;
          sent -= item.size;
        }
      };
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { body = null; }
        resolve({ status: xhr.status, body, retryAfter: xhr.getResponseHeader("Retry-After") });
      };
      xhr.onerror = () => resolve({ status: 0, body: null, retryAfter: null });
      xhr.send(form);
    });
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  /** Send one batch until it is acknowledged or refused; returns smaller batches to send instead, or null. */
  async function sendBatch(entity, batch) {
    for (let attempt = 1; ; attempt += 1) {
      for (const item of batch) { item.phase = "uploading"; setStatus(item, "uploading", ""); }
      summarize();
      const r = await post(entity, batch);
      const error = (r.body && r.body.error) || {};
      const message = error.message || `HTTP ${r.status}`;
      if (r.status === 202 || r.status === 200) {
        for (const item of batch) { item.phase = "queued"; item.jobId = r.body.job_id; item.bar.value = 1;
          setStatus(item, "queued", `job ${r.body.job_id}`); }
        state.jobs.set(r.body.job_id, batch);
        poll();
        return null;
      }
      if (r.status === 401) {
        for (const item of batch) { item.phase = "pending"; setStatus(item, "ready", ""); }
        signedOut("The server no longer accepts this token. Sign in again; the files not sent stay in the list.");
        return null;
      }
      // 413 / 400 on several files: find the file the server refuses by sending halves. 503 on several
      // files: the staging area may be too small for them together; halves, each after Retry-After.
      if ((r.status === 413 || r.status === 400 || r.status === 503) && batch.length > 1) {
        if (r.status === 503) {
          const wait = Math.min(60, Math.max(1, parseInt(r.retryAfter || "", 10) || 5));
          for (const item of batch) { item.phase = "retrying"; item.bar.value = 0;
            setStatus(item, "retrying", `503 ${error.code || ""}: ${message} — retrying in ${wait} s, fewer files at once`); }
          summarize();
          await sleep(wait * 1000);
        }
        const half = Math.ceil(batch.length / 2);
        for (const item of batch) { item.phase = "pending"; item.bar.value = 0; setStatus(item, "ready", ""); }
        return [batch.slice(0, half), batch.slice(half)];
      }
      const retryable = r.status === 503 || r.status === 0 || r.status === 408;
      if (retryable && attempt < 20) {
        const wait = Math.min(60, Math.max(1, parseInt(r.retryAfter || "", 10) || Math.min(2 ** attempt, 30)));
        const why = r.status === 0 ? "connection lost" : `${r.status} ${error.code || ""}: ${message}`;
        for (const item of batch) { item.phase = "retrying"; item.bar.value = 0;
          setStatus(item, "retrying", `${why} — retrying in ${wait} s (attempt ${attempt + 1})`); }
        summarize();
        await sleep(wait * 1000);
        continue;
      }
      const why = r.status === 413 ? `too large for this server (413): ${message}` : `${r.status || "network"} ${error.code || ""}: ${message}`;
      for (const item of batch) { item.phase = "failed"; setStatus(item, "failed", why); }
      summarize();
      return null;
    }
  }

  async function poll() {
    if (state.polling) return;
    state.polling = true;
    try {
      while (state.jobs.size) {
        for (const [jobId, batch] of Array.from(state.jobs)) {
          let job;
          try {
            job = await api("GET", `/api/jobs/${enc(jobId)}`);
          } catch (err) {
            if (err instanceof ApiError && err.status === 401) return;
            if (err instanceof ApiError && err.status === 404) { // pruned, or another server's store
              for (const item of batch) { item.phase = "failed"; setStatus(item, "failed", `job ${jobId}: ${err.message}`); }
              state.jobs.delete(jobId);
            }
            continue; // a transient error: the next round asks again
          }
          const byPath = new Map((job.files || []).map((f) => [f.path, f]));
          for (const item of batch) {
            const f = byPath.get(item.path);
            const status = (f && f.status) || (JOB_FINISHED.has(job.status) ? job.status : job.status);
            let detail = (f && f.error) || (SETTLED.has(status) ? "" : `job ${jobId}`);
            if (f && f.status && !f.error && f.chunks !== null) detail = `${f.chunks} chunk${f.chunks === 1 ? "" : "s"} added`;
            if (!f && job.error) detail = job.error;
            item.phase = SETTLED.has(status) ? status : (status === "done" ? "indexed" : status);
            setStatus(item, status, detail);
          }
          if (JOB_FINISHED.has(job.status)) {
            for (const item of batch) if (!SETTLED.has(item.phase)) {
              item.phase = "failed";
              setStatus(item, "failed", job.error || `job ${job.status}`);
            }
            state.jobs.delete(jobId);
          }
        }
        summarize();
        if (state.jobs.size) await sleep(POLL_MS);
      }
    } finally {
      state.polling = false;
    }
  }

  /* ---------- search ---------- */

  function showSearch(params) {
    show("search");
    const entity = params.get("entity") || $("search-entity").value;
    const query = params.get("q") || "";
    const mode = params.get("mode") || $("search-mode").value || "hybrid";
    const k = params.get("k") || $("search-k").value || "5";
    $("search-entity").value = entity;
    $("search-q").value = query;
    $("search-mode").value = mode;
    $("search-k").value = k;
    clear($("search-results"));
    $("search-summary").textContent = "";
    if (!entity || !query) return Promise.resolve();
    return runSearch(entity, query, mode, parseInt(k, 10));
  }

  async function runSearch(entity, query, mode, k) {
    const latest = claim("search");
    $("search-summary").textContent = "Searching…";
    let data;
    try {
      data = await api("POST", `/api/entities/${enc(entity)}/search`, { query, k, mode });
    } catch (err) {
      if (!latest()) return;
      $("search-summary").textContent = "";
      throw err;
    }
    if (!latest()) return;
    const words = queryWords(query);
    const list = $("search-results");
    clear(list);
    for (const hit of data.results) list.append(hitItem(entity, hit, words));
    const n = data.results.length;
    $("search-summary").textContent = `${n} hit${n === 1 ? "" : "s"} in ${entity} (${mode}, k=${k})`;
  }

  function queryWords(query) {
    const words = (query.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((w) => w.length > 2 || /\d/.test(w)); // not "of", "a", "to"
    return Array.from(new Set(words)).sort((a, b) => b.length - a.length);
  }

  function hitItem(entity, hit, words) {
    const meta = [];
    if (hit.title) meta.push(`title: ${hit.title}`);
    if (hit.section) meta.push(`section: ${hit.section}`);
    if (hit.page !== undefined && hit.page !== null) meta.push(`page ${hit.page}`);
    const chunks = Array.isArray(hit.chunks) && hit.chunks.length > 1 ? hit.chunks : null;
    meta.push(chunks ? `chunks ${chunks.join(", ")} (best ${hit.chunk})` : `chunk ${hit.chunk}`);
    if (hit.ocr) meta.push("OCR");
    if (hit.vector_rank) meta.push(`vector #${hit.vector_rank}`);
    if (hit.text_rank) meta.push(`text #${hit.text_rank}`);
    const link = `#/entity/${enc(entity)}?path=${enc(hit.path)}&doc=${enc(hit.doc_id)}`;
    return el("li", {},
      el("div", { class: "hit-head" },
        el("a", { class: "path", href: link, title: "show this document in the entity's list", text: hit.path }),
        el("span", { class: "score", text: `score ${Number(hit.score).toFixed(3)}` })),
      el("div", { class: "hit-meta", text: meta.join(" · ") }),
      Array.isArray(hit.also_in) && hit.also_in.length
        ? el("div", { class: "hit-meta", text: `also in: ${hit.also_in.join(", ")}` }) : null,
      snippet(hit.text || "", words));
  }

  /** The chunk text around the first query word (at most ~480 characters), each query word in a <mark>. */
  function snippet(text, words) {
    const p = el("p", { class: "snippet" });
    const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const re = escaped.length ? new RegExp(`(${escaped.join("|")})`, "giu") : null;
    let start = 0;
    const LIMIT = 480;
    if (re) {
      const m = re.exec(text);
      re.lastIndex = 0;
      if (m && m.index > 160) {
        start = text.lastIndexOf(" ", m.index - 120);
        start = start < 0 ? m.index - 120 : start + 1;
      }
    }
    let part = text.slice(start, start + LIMIT);
    if (start > 0) part = `…${part}`;
    if (start + LIMIT < text.length) part = `${part}…`;
    if (!re) { p.textContent = part; return p; }
    part.split(re).forEach((piece, i) => {
      if (!piece) return;
      p.append(i % 2 === 1 ? el("mark", { text: piece }) : document.createTextNode(piece));
    });
    return p;
  }

  /* ---------- wiring ---------- */

  function wire() {
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", () => signedOut("Signed out."));
    window.addEventListener("hashchange", route);
    $("entities-filter").addEventListener("submit", (e) => {
      e.preventDefault();
      go(`#/entities?q=${enc($("entities-q").value.trim())}&page=0`);
    });
    $("search-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const k = Math.min(100, Math.max(1, parseInt($("search-k").value, 10) || 5));
      go(`#/search?entity=${enc($("search-entity").value.trim())}&q=${enc($("search-q").value.trim())}` +
        `&mode=${enc($("search-mode").value)}&k=${k}`);
    });
    $("upload-form").addEventListener("submit", startUpload);
    $("upload-clear").addEventListener("click", () => {
      state.upload = state.upload.filter((item) => {
        const keep = !SETTLED.has(item.phase) && item.phase !== "pending";
        if (!keep) item.row.remove();
        return keep;
      });
      summarize();
    });
    for (const id of ["pick-files", "pick-folder"]) {
      $(id).addEventListener("change", (e) => {
        addFiles(Array.from(e.target.files).map((file) => ({ file, path: file.webkitRelativePath || file.name })));
        e.target.value = "";
      });
    }
    $("choose-files").addEventListener("click", () => $("pick-files").click());
    $("choose-folder").addEventListener("click", () => $("pick-folder").click());
    const zone = $("dropzone");
    zone.addEventListener("click", () => $("pick-files").click());
    zone.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("pick-files").click(); }
    });
    for (const name of ["dragenter", "dragover"]) zone.addEventListener(name, (e) => {
      e.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      filesFromDrop(e.dataTransfer).then(addFiles).catch(report);
    });
    // a file dropped outside the zone must not make the browser navigate away from the console
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());
  }

  document.addEventListener("DOMContentLoaded", start);
})();
