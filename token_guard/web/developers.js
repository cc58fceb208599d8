// The Developers page: sign in with OAuth client credentials, then list, inspect, create and
// revoke API access tokens through the Tokens API of the same server.
//
// Security choices:
// - The OAuth access token lives in this closure only (never localStorage, sessionStorage,
//   cookies or the URL), so it dies with the tab and no other script on the origin can read it.
// - Everything that comes from the API is rendered with textContent / DOM nodes, never as HTML.
// - Requests send no cookies and no Referer; the page's CSP allows only this origin.
"use strict";

(() => {
  const PAGE_LIMIT = 500;
  // A safety stop: a store with more tokens than this is paged, not loaded into one table.
  const MAX_PAGES = 20;
  // Words for the APIs this page knows; the list of APIs itself is the server's
  // (loadApiChoices), and an API without a word here is shown by its name.
  const API_LABELS = { maps: "Maps", sql: "SQL", lds: "LDS", imports: "Imports" };

  const $ = (id) => {
    const node = document.getElementById(id);
    if (!node) throw new Error(`the page has no element #${id}`);
    return node;
  };

  const session = { accessToken: null, clientId: "", expiryTimer: 0 };
  const state = {
    tokens: [], loaded: false, created: null, revokeTarget: null, view: "", editing: null,
  };

  // --- small DOM helpers ------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function announce(message) {
    const status = $("status");
    // Emptied first so that the same message twice is announced twice.
    status.textContent = "";
    window.setTimeout(() => { status.textContent = message; }, 30);
  }

  function formatTime(iso, empty) {
    if (!iso) return document.createTextNode(empty);
    const date = new Date(iso);
    const text = Number.isNaN(date.getTime())
      ? iso
      : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    return el("time", { datetime: iso, title: iso }, text);
  }

  function shorten(text, max) {
    const flat = text.replace(/\s+/g, " ").trim();
    return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
  }

  function apiLabel(api) {
    return Object.prototype.hasOwnProperty.call(API_LABELS, api) ? API_LABELS[api] : api;
  }

  function apisText(apis) {
    return apis.map(apiLabel).join(", ");
  }

  function grantsSummary(grants) {
    if (!grants.length) return "None";
    const shown = grants.slice(0, 2).map((g) => `${g.connection_name}: ${shorten(g.source, 48)}`);
    const more = grants.length - shown.length;
    return more > 0 ? `${shown.join("; ")} (+${more} more)` : shown.join("; ");
  }

  function referersText(referers) {
    return referers.length ? referers.join(", ") : "Any website";
  }

  // "600/minute sql, 1000000/month" — the token's limits (null: none).
  function limitsText(limits) {
    if (!limits) return "None";
    const quota = limits.quota ? [].concat(limits.quota) : [];
    const rules = [...(limits.rate || []), ...quota];
    return rules.map((r) => `${r.requests}/${r.per}${r.api ? ` ${r.api}` : ""}`).join(", ") || "None";
  }

  function plural(n, noun) {
    return `${n} ${noun}${n === 1 ? "" : "s"}`;
  }

  function stateBadge(value) {
    return el("span", { className: `badge state-${value}` }, value);
  }

  // --- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const message = body && typeof body.error === "string"
        ? body.error : `the server answered ${status}`;
      super(message);
      this.status = status;
      this.field = body && typeof body.field === "string" ? body.field : "";
      this.hint = body && typeof body.hint === "string" ? body.hint : "";
      // invalid_token_spec: every field's error at once, to show each beside its field.
      this.errors = body && Array.isArray(body.errors)
        ? body.errors.filter((e) => e && typeof e.field === "string" && typeof e.error === "string")
        : [];
      this.description = body && typeof body.error_description === "string"
        ? body.error_description : "";
    }
  }

  function apiUrl(path) {
    // Relative to the page, so the management app also works mounted under a prefix.
    return new URL(path, document.baseURI).toString();
  }

  async function send(method, path, init) {
    let response;
    try {
      response = await fetch(apiUrl(path), {
        method, credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer", ...init,
      });
    } catch (_) {
      throw new ApiError(0, { error: "the server did not answer; check that it runs and retry" });
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    return { response, body };
  }

  async function api(method, path, payload) {
    if (!session.accessToken) {
      showSignIn("Sign in to manage tokens.");
      throw new ApiError(401, { error: "not signed in" });
    }
    const headers = { Accept: "application/json", Authorization: `Bearer ${session.accessToken}` };
    const init = { headers };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const { response, body } = await send(method, path, init);
    if (response.status === 401) {
      const why = body && body.error ? body.error : "the access token was refused";
      signOut(`You were signed out: ${why}. Sign in again.`);
      throw new ApiError(401, body);
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // The APIs a token may call, as the server's OpenAPI document lists them, so the form
  // offers exactly what the Tokens API accepts (no sign-in needed: the document is public).
  async function loadApiChoices() {
    const box = $("api-choices");
    let names = null;
    try {
      const { response, body } = await send("GET", "openapi.json", {
        headers: { Accept: "application/json" },
      });
      const schema = response.ok && body && body.components && body.components.schemas
        && body.components.schemas.TokenCreate;
      fillKnownConnections(schema);
      const apis = schema && schema.properties && schema.properties.allowed_apis;
      const list = apis && apis.items && apis.items.enum;
      if (Array.isArray(list) && list.length && list.every((n) => typeof n === "string")) {
        names = list;
      }
    } catch (_) {
      names = null;
    }
    box.removeAttribute("aria-busy");
    clear(box);
    if (!names) {
      // In the box, not in #apis-error: clearing the form's errors must not hide it.
      box.append(el("p", { role: "alert" },
        "The list of APIs could not be loaded from the server; reload the page."));
      return;
    }
    for (const name of names) {
      box.append(el("label", {},
        el("input", { type: "checkbox", name: "allowed_apis", value: name }), ` ${apiLabel(name)}`));
    }
  }

  // The connections the app serves, when the server was given its configuration: offered in
  // each grant row's Connection field (a datalist: a name typed by hand still reaches the
  // server, which refuses an unknown one naming the field).
  function fillKnownConnections(schema) {
    const grants = schema && schema.properties && schema.properties.grants;
    const conn = grants && grants.items && grants.items.properties
      && grants.items.properties.connection_name;
    const names = conn && conn.enum;
    const list = $("known-connections");
    if (!list || !Array.isArray(names)) return;
    clear(list);
    list.dataset.configured = "true"; // the app's own list: not replaced by offerConnections
    for (const name of names) {
      if (typeof name === "string") list.append(el("option", { value: name }));
    }
  }

  // --- session ----------------------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const idInput = $("client-id");
    const secretInput = $("client-secret");
    const error = $("sign-in-error");
    error.hidden = true;
    const clientId = idInput.value.trim();
    const secret = secretInput.value;
    if (!clientId || !secret) {
      error.textContent = "Enter both the client id and the client secret.";
      error.hidden = false;
      (clientId ? secretInput : idInput).focus();
      return;
    }
    const form = new URLSearchParams({
      grant_type: "client_credentials", client_id: clientId, client_secret: secret,
    });
    const submit = event.submitter || null;
    if (submit) submit.disabled = true;
    try {
      const { response, body } = await send("POST", "oauth/token", {
        headers: { Accept: "application/json", "Content-Type": "application/x-www-form-urlencoded" },
        body: form.toString(),
      });
      if (!response.ok || !body || typeof body.access_token !== "string") {
        const reason = body && (body.error_description || body.error);
        throw new ApiError(response.status, {
          error: reason ? `Sign-in failed: ${reason}` : `Sign-in failed (${response.status})`,
        });
      }
      session.accessToken = body.access_token;
      session.clientId = clientId;
      const seconds = Number(body.expires_in);
      if (Number.isFinite(seconds) && seconds > 0) {
        // Cap: setTimeout misfires past 2^31 ms; a day is the server's default anyway.
        const ms = Math.min(seconds * 1000, 2 ** 31 - 1);
        session.expiryTimer = window.setTimeout(
          () => signOut("Your session expired. Sign in again."), ms,
        );
      }
      secretInput.value = "";
      idInput.value = "";
      $("session-client").textContent = `Signed in as ${clientId}`;
      $("session").hidden = false;
      $("nav").hidden = false;
      // Routed here rather than by a hashchange event, so that the announcement below
      // comes after the view switch (which clears the previous view's message).
      if (!location.hash || location.hash === "#") history.replaceState(null, "", "#tokens");
      route();
      announce("Signed in.");
    } catch (exc) {
      error.textContent = exc.message;
      error.hidden = false;
      secretInput.focus();
    } finally {
      if (submit) submit.disabled = false;
    }
  }

  function signOut(message) {
    session.accessToken = null;
    session.clientId = "";
    window.clearTimeout(session.expiryTimer);
    state.tokens = [];
    state.loaded = false;
    forgetCreated();
    forgetRotated();
    clear($("token-rows"));
    clear($("detail-fields"));
    clear($("detail-grants"));
    const dialog = $("revoke-dialog");
    if (dialog.open) dialog.close("cancel");
    $("session").hidden = true;
    $("nav").hidden = true;
    $("session-client").textContent = "";
    showSignIn(message || "Signed out.");
  }

  function showSignIn(message) {
    showView("view-sign-in");
    if (message) announce(message);
    $("client-id").focus();
  }

  // --- views and routing ------------------------------------------------------------------

  const VIEWS = ["view-sign-in", "view-tokens", "view-detail", "view-new", "view-created"];

  function showView(id) {
    // A message belongs to the view it was said on.
    if (state.view !== id) $("status").textContent = "";
    state.view = id;
    for (const view of VIEWS) $(view).hidden = view !== id;
    for (const link of document.querySelectorAll("#nav a")) {
      const current = (id === "view-tokens" && link.id === "nav-tokens")
        || (id === "view-new" && link.id === "nav-new");
      if (current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function focusHeading(id) {
    const heading = $(id);
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }

  function route() {
    if (!session.accessToken) {
      showSignIn("");
      return;
    }
    const hash = location.hash.replace(/^#/, "");
    if (hash !== "created") forgetCreated();
    forgetRotated();
    if (hash === "new") {
      showView("view-new");
      resetCreateForm();
      setFormMode(null);
      focusHeading("new-title");
    } else if (hash === "created" && state.created) {
      showView("view-created");
    } else if (/^token\/[^/]+\/edit$/.test(hash)) {
      showEdit(decodeURIComponent(hash.slice("token/".length, -"/edit".length)));
    } else if (hash.startsWith("token/")) {
      showDetail(decodeURIComponent(hash.slice("token/".length)));
    } else {
      showView("view-tokens");
      focusHeading("tokens-title");
      loadTokens();
    }
  }

  // --- token list -------------------------------------------------------------------------

  async function fetchAllTokens() {
    const all = [];
    let after = null;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const query = new URLSearchParams({ limit: String(PAGE_LIMIT) });
      if (after) query.set("after", after);
      const body = await api("GET", `v3/tokens?${query}`);
      all.push(...body.tokens);
      if (!body.next) break;
      after = body.next;
    }
    // Newest first: what a person just created is what they look for.
    all.sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
    return all;
  }

  async function loadTokens() {
    try {
      state.tokens = await fetchAllTokens();
      state.loaded = true;
      renderTokens();
      offerConnections(state.tokens);
    } catch (exc) {
      if (exc.status !== 401) announce(`Could not load the tokens: ${exc.message}`);
    }
  }

  // The connections grants may name, as the tokens already use them (the management app does
  // not know the guard's configuration): offered by every grant row's connection field.
  function offerConnections(tokens) {
    const names = [...new Set(tokens.flatMap((t) => t.grants.map((g) => g.connection_name)))].sort();
    const list = $("known-connections");
    if (list.dataset.configured === "true") return;
    clear(list);
    for (const name of names) list.append(el("option", { value: name }));
  }

  function matches(token, needle) {
    if (!needle) return true;
    const haystack = [
      token.name, token.id, token.state, ...token.allowed_apis, ...token.referers,
      ...token.grants.flatMap((g) => [g.connection_name, g.source]),
    ].join("\n").toLowerCase();
    return needle.split(/\s+/).every((word) => haystack.includes(word));
  }

  function cell(label, ...children) {
    return el("td", { role: "cell", dataset: { label } }, ...children);
  }

  function renderTokens() {
    const body = $("token-rows");
    clear(body);
    const needle = $("filter").value.trim().toLowerCase();
    const shown = state.tokens.filter((t) => matches(t, needle));
    for (const token of shown) {
      const name = token.name || "(no name)";
      const detail = el("a", { href: `#token/${encodeURIComponent(token.id)}`, className: "name" }, name);
      const revoke = token.state === "active" || token.state === "disabled"
        ? el("button", {
          type: "button", className: "button danger small",
          "aria-label": `Revoke ${name}`, onclick: () => openRevoke(token),
        }, "Revoke")
        : null;
      body.append(el("tr", { role: "row", dataset: { tokenId: token.id } },
        cell("Name", detail),
        // One child: at phone width each cell is a two-column grid (label, value).
        cell("Id", el("span", {}, el("code", {}, token.id),
          token.secret_prefix ? secretPrefix(token) : null)),
        cell("APIs", apisText(token.allowed_apis)),
        cell("Grants", grantsSummary(token.grants)),
        cell("Referers", referersText(token.referers)),
        cell("Limits", token.limits ? limitsText(token.limits) : ""),
        cell("Created", formatTime(token.created_at, "")),
        cell("Last used", formatTime(token.last_used_at, "Never")),
        cell("Expires", formatTime(token.expiration_date, "Never")),
        cell("State", stateBadge(token.state)),
        cell("Actions", revoke)));
    }
    const empty = $("tokens-empty");
    const count = $("filter-count");
    if (!state.tokens.length) {
      empty.textContent = "No tokens yet. Create one to call the APIs.";
      empty.hidden = false;
      count.textContent = "";
    } else if (!shown.length) {
      empty.textContent = "No token matches the filter.";
      empty.hidden = false;
      count.textContent = `0 of ${plural(state.tokens.length, "token")} shown`;
    } else {
      empty.hidden = true;
      count.textContent = `${shown.length} of ${plural(state.tokens.length, "token")} shown`;
    }
    $("token-table").hidden = !shown.length;
  }

  // --- token detail -----------------------------------------------------------------------

  async function showDetail(id) {
    showView("view-detail");
    clear($("detail-fields"));
    clear($("detail-grants"));
    $("detail-title").textContent = "Token";
    $("detail-revoke").hidden = true;
    $("detail-lifecycle").hidden = true;
    $("detail-snippets").hidden = true;
    $("detail-edit").hidden = true;
    $("detail-history").hidden = true;
    let token;
    try {
      token = await api("GET", `v3/tokens/${encodeURIComponent(id)}`);
    } catch (exc) {
      if (exc.status !== 401) {
        $("detail-title").textContent = "Token not found";
        announce(exc.message);
      }
      return;
    }
    renderDetail(token);
    focusHeading("detail-title");
    loadUsage(token.id);
  }

  function renderDetail(token) {
    const name = token.name || "(no name)";
    $("detail-title").textContent = `Token: ${name}`;
    const fields = $("detail-fields");
    clear(fields);
    const rows = [
      ["Id", el("code", {}, token.id)],
      ["State", stateBadge(token.state)],
      ["APIs", apisText(token.allowed_apis)],
      ["Referers", token.referers.length
        ? el("ul", { className: "plain" }, ...token.referers.map((r) => el("li", {}, el("code", {}, r))))
        : "Any website"],
      ["Created", formatTime(token.created_at, "")],
      ["Last used", formatTime(token.last_used_at, "Never")],
      ["Expires", formatTime(token.expiration_date, "Never")],
      ["Limits", limitsText(token.limits)],
    ];
    if (token.revoked_at) rows.push(["Revoked", formatTime(token.revoked_at, "")]);
    if (token.disabled_at) rows.push(["Disabled", formatTime(token.disabled_at, "")]);
    rows.splice(1, 0, ["Secret", secretPrefix(token)]);
    for (const [label, value] of rows) {
      fields.append(el("div", { className: "field-row" }, el("dt", {}, label), el("dd", {}, value)));
    }
    const grants = $("detail-grants");
    clear(grants);
    for (const grant of token.grants) {
      grants.append(el("tr", {},
        el("td", { dataset: { label: "Connection" } }, el("code", {}, grant.connection_name)),
        el("td", { dataset: { label: "Source" } }, el("code", { className: "source" }, grant.source))));
    }
    $("detail-no-grants").hidden = token.grants.length > 0;
    const revoke = $("detail-revoke");
    revoke.hidden = token.state === "revoked" || token.state === "expired";
    revoke.onclick = () => openRevoke(token);
    renderLifecycle(token);
    $("detail-edit").href = `#token/${encodeURIComponent(token.id)}/edit`;
    $("detail-edit").hidden = token.state === "revoked";
    renderSnippets(token);
    loadHistory(token);
  }

  // --- history: the token's audit log -----------------------------------------------------

  const HISTORY_LIMIT = 50;
  const ACTION_WORDS = {
    "token.create": "created", "token.update": "edited", "token.revoke": "revoked",
    "token.rotate": "secret rotated", "token.rotate.expire": "grace period ended",
    "token.disable": "disabled", "token.enable": "enabled",
    "token.leak_reported": "reported leaked by a secret scanner",
  };

  function historyDetail(entry) {
    const d = entry.detail || {};
    if (entry.action === "token.update" && Array.isArray(d.fields)) return ` (${d.fields.join(", ")})`;
    if (entry.action === "token.rotate" && typeof d.grace_seconds === "number") {
      return ` (old secret works ${d.grace_seconds ? `until ${d.old_secret_expires_at}` : "no longer"})`;
    }
    if (entry.action === "token.leak_reported" && typeof d.url === "string") return ` (${d.url})`;
    return "";
  }

  async function loadHistory(token) {
    const section = $("detail-history");
    const list = $("history-entries");
    let body;
    try {
      const query = new URLSearchParams({ token_id: token.id, limit: String(HISTORY_LIMIT) });
      body = await api("GET", `v3/audit?${query}`);
    } catch (exc) {
      section.hidden = true;
      return;
    }
    if (state.view !== "view-detail") return;
    clear(list);
    for (const entry of body.entries) {
      const words = Object.prototype.hasOwnProperty.call(ACTION_WORDS, entry.action)
        ? ACTION_WORDS[entry.action] : entry.action;
      list.append(el("li", { dataset: { action: entry.action } },
        formatTime(entry.at, ""), " ", el("strong", {}, words), historyDetail(entry), " ",
        el("span", { className: "actor" }, `by ${entry.actor}`)));
    }
    $("history-more").hidden = !body.next;
    section.hidden = !body.entries.length;
  }

  // --- snippets: curl and @carto/api-client, with the secret read from $TOKEN -------------

  function snippetSource(token) {
    // The first grant the token holds decides the example; LDS needs no grant.
    const grant = token.grants[0];
    const isQuery = grant && /^\s*(\(|select\b|with\b)/i.test(grant.source);
    return { grant, isQuery };
  }

  function curlSnippet(token, base) {
    const { grant, isQuery } = snippetSource(token);
    const apis = token.allowed_apis;
    let path;
    if (grant && apis.includes("sql")) {
      const q = isQuery ? grant.source : `SELECT * FROM ${grant.source.replace(/\*$/, "my_table")} LIMIT 10`;
      path = `/v3/sql/${grant.connection_name}/query?q=${encodeURIComponent(q)}`;
    } else if (grant && apis.includes("maps")) {
      path = isQuery
        ? `/v3/maps/${grant.connection_name}/query?q=${encodeURIComponent(grant.source)}`
        : `/v3/maps/${grant.connection_name}/table?name=${encodeURIComponent(grant.source)}`;
    } else if (apis.includes("lds")) {
      path = "/v3/lds/geocoding/geocode?address=Madrid";
    } else {
      path = "/v3/imports";
    }
    return `curl -H "Authorization: Bearer $TOKEN" \\\n  "${base}${path}"`;
  }

  function jsSnippet(token, base) {
    const { grant, isQuery } = snippetSource(token);
    const conn = grant ? grant.connection_name : "carto_dw";
    const source = grant ? grant.source : "project.dataset.table";
    const fn = isQuery ? "vectorQuerySource" : "vectorTableSource";
    const param = isQuery ? `sqlQuery: ${JSON.stringify(source)}` : `tableName: ${JSON.stringify(source)}`;
    return [
      `import { ${fn} } from "@carto/api-client";`,
      "",
      `const data = await ${fn}({`,
      `  apiBaseUrl: ${JSON.stringify(base)},`,
      "  accessToken: process.env.TOKEN, // the secret: never in source code",
      `  connectionName: ${JSON.stringify(conn)},`,
      `  ${param},`,
      "});",
    ].join("\n");
  }

  function renderSnippets(token) {
    const live = token.state === "active" || token.state === "disabled";
    $("detail-snippets").hidden = !live;
    if (!live) return;
    const base = location.origin;
    $("snippet-curl").textContent = curlSnippet(token, base);
    $("snippet-js").textContent = jsSnippet(token, base);
    $("snippet-copy-status").textContent = "";
  }

  async function copySnippet(id) {
    const status = $("snippet-copy-status");
    try {
      await navigator.clipboard.writeText($(id).textContent);
      status.textContent = "Copied to the clipboard.";
    } catch (_) {
      status.textContent = "Could not copy automatically: select the text and press Ctrl+C.";
    }
  }

  function secretPrefix(token) {
    // The secret's non-secret start (tgk_ + 8 characters), to match a secret someone holds.
    return token.secret_prefix
      ? el("code", { className: "secret-prefix", title: "the start of the current secret" },
        `${token.secret_prefix}…`)
      : document.createTextNode("(not kept for this secret)");
  }

  // --- lifecycle: rotate, end the grace period, disable, enable ---------------------------

  function renderLifecycle(token) {
    const revoked = token.state === "revoked" || token.state === "expired";
    $("detail-lifecycle").hidden = revoked;
    if (revoked) return;
    const disabled = token.state === "disabled";
    $("detail-disable").hidden = disabled;
    $("detail-enable").hidden = !disabled;
    $("detail-rotate").onclick = () => rotateSecret(token);
    $("detail-end-grace").onclick = () => endGrace(token);
    $("detail-disable").onclick = () => setDisabled(token, true);
    $("detail-enable").onclick = () => setDisabled(token, false);
  }

  async function lifecycleCall(token, path, payload, done) {
    const name = token.name || "(no name)";
    try {
      const answer = await api("POST", `v3/tokens/${encodeURIComponent(token.id)}/${path}`, payload);
      renderDetail(answer);
      done(answer, name);
    } catch (exc) {
      if (exc.status !== 401) announce(`Could not change ${name}: ${exc.message}`);
    }
  }

  function rotateSecret(token) {
    const grace = Number($("rotate-grace").value);
    return lifecycleCall(token, "rotate", { grace_seconds: grace }, (answer, name) => {
      showRotated(answer);
      announce(`A new secret was issued for ${name}; copy it now.`);
    });
  }

  function endGrace(token) {
    return lifecycleCall(token, "rotate/expire", undefined, (answer, name) => {
      announce(`The grace period of ${name}'s old secrets ended: only the current secret works.`);
    });
  }

  function setDisabled(token, disable) {
    return lifecycleCall(token, disable ? "disable" : "enable", undefined, (answer, name) => {
      announce(disable ? `Token ${name} was disabled; requests with it are refused until it is enabled.`
        : `Token ${name} was enabled; requests with it are accepted again.`);
      $(disable ? "detail-enable" : "detail-disable").focus();
    });
  }

  function showRotated(answer) {
    $("rotated-secret").value = answer.token;
    clear($("rotated-until"));
    $("rotated-until").append(answer.grace_seconds
      ? formatTime(answer.old_secret_expires_at, "") : document.createTextNode("now (it is refused already)"));
    $("rotated-copy-status").textContent = "";
    $("rotated-box").hidden = false;
    $("rotated-secret").focus();
    $("rotated-secret").select();
  }

  function forgetRotated() {
    const box = document.getElementById("rotated-box");
    if (box) box.hidden = true;
    const secret = document.getElementById("rotated-secret");
    if (secret) secret.value = "";
  }


  // --- usage chart ------------------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";
  const USAGE_COLOURS = ["#2f6fdb", "#d64545", "#e08a1e", "#8a4fd1", "#2a9d8f", "#6b7280"];

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    for (const child of children) node.append(child);
    return node;
  }

  async function loadUsage(id) {
    clear($("usage-chart"));
    clear($("usage-legend"));
    $("usage-summary").textContent = "Loading…";
    let report;
    try {
      report = await api("GET", `v3/tokens/${encodeURIComponent(id)}/usage`);
    } catch (exc) {
      $("usage-summary").textContent = `Could not load the usage: ${exc.message}`;
      return;
    }
    renderUsage(report);
  }

  // Requests per UTC day: allowed at the bottom, each refusal reason stacked above it.
  function renderUsage(report) {
    const chart = $("usage-chart");
    clear(chart);
    clear($("usage-legend"));
    const end = new Date(report.to);
    const days = [];
    for (let i = 29; i >= 0; i -= 1) {
      days.push(new Date(end.getTime() - i * 86400000).toISOString().slice(0, 10));
    }
    const byDay = new Map(report.days.map((d) => [d.day, d]));
    const reasons = [...new Set(report.days.flatMap((d) => Object.keys(d.refused)))].sort();
    const series = ["allowed", ...reasons];
    const totals = days.map((day) => {
      const d = byDay.get(day);
      return d ? d.allowed + Object.values(d.refused).reduce((a, b) => a + b, 0) : 0;
    });
    const allowed = report.days.reduce((a, d) => a + d.allowed, 0);
    const refused = totals.reduce((a, b) => a + b, 0) - allowed;
    $("usage-summary").textContent = totals.some((t) => t > 0)
      ? `${allowed} allowed, ${refused} refused in the last 30 days (UTC days; counts are written every few seconds).`
      : "No requests in the last 30 days.";
    const width = 600;
    const height = 200;
    const left = 40;
    const bottom = 20;
    const max = Math.max(1, ...totals);
    const slot = (width - left) / days.length;
    const plot = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, role: "img", preserveAspectRatio: "xMinYMid meet",
      "aria-label": `Requests per day: ${allowed} allowed, ${refused} refused`,
    });
    plot.append(svg("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: "axis" }));
    plot.append(svg("text", { x: left - 4, y: 12, "text-anchor": "end" }, document.createTextNode(String(max))));
    plot.append(svg("text", { x: left - 4, y: height - bottom, "text-anchor": "end" }, document.createTextNode("0")));
    days.forEach((day, i) => {
      const d = byDay.get(day);
      let y = height - bottom;
      series.forEach((name, k) => {
        const n = d ? (name === "allowed" ? d.allowed : d.refused[name] || 0) : 0;
        if (!n) return;
        const h = (n / max) * (height - bottom - 10);
        y -= h;
        const bar = svg("rect", {
          x: left + i * slot + 1, y, width: Math.max(1, slot - 2), height: h,
          fill: USAGE_COLOURS[Math.min(k, USAGE_COLOURS.length - 1)],
          "data-day": day, "data-series": name, "data-count": n,
        });
        bar.append(svg("title", {}, document.createTextNode(`${day}: ${n} ${name === "allowed" ? "allowed" : `refused (${name})`}`)));
        plot.append(bar);
      });
      if ((days.length - 1 - i) % 7 === 0) {
        plot.append(svg("text", { x: left + i * slot, y: height - 5 }, document.createTextNode(day.slice(5))));
      }
    });
    chart.append(plot);
    const legend = $("usage-legend");
    series.forEach((name, k) => {
      legend.append(el("li", {},
        el("span", { className: `swatch c${Math.min(k, USAGE_COLOURS.length - 1)}`, "aria-hidden": "true" }),
        name === "allowed" ? "Allowed" : `Refused: ${name}`));
    });
  }

  // --- revoke -----------------------------------------------------------------------------

  function openRevoke(token) {
    state.revokeTarget = token;
    $("revoke-name").textContent = token.name || "(no name)";
    $("revoke-id").textContent = token.id;
    const dialog = $("revoke-dialog");
    dialog.returnValue = "";
    dialog.showModal();
    $("revoke-cancel").focus();
  }

  async function onRevokeClosed() {
    const dialog = $("revoke-dialog");
    const token = state.revokeTarget;
    state.revokeTarget = null;
    if (dialog.returnValue !== "revoke" || !token) return;
    const name = token.name || "(no name)";
    try {
      const revoked = await api("DELETE", `v3/tokens/${encodeURIComponent(token.id)}`);
      announce(`Token ${name} was revoked; requests with it are now refused.`);
      if (location.hash === `#token/${encodeURIComponent(token.id)}`) {
        renderDetail(revoked);
        focusHeading("detail-title");
      } else {
        await loadTokens();
        focusHeading("tokens-title");
      }
    } catch (exc) {
      if (exc.status !== 401) announce(`Could not revoke ${name}: ${exc.message}`);
    }
  }

  // --- create -----------------------------------------------------------------------------

  let grantSerial = 0;

  function addGrantRow(connection, source) {
    grantSerial += 1;
    const template = $("grant-row-template");
    const row = template.content.firstElementChild.cloneNode(true);
    const n = grantSerial;
    const conn = row.querySelector(".grant-conn");
    const src = row.querySelector(".grant-source");
    const error = row.querySelector(".grant-error");
    conn.id = `grant-conn-${n}`;
    src.id = `grant-source-${n}`;
    error.id = `grant-error-${n}`;
    row.querySelector(".grant-conn-label").htmlFor = conn.id;
    row.querySelector(".grant-source-label").htmlFor = src.id;
    conn.setAttribute("list", "known-connections");
    conn.value = connection || "";
    src.value = source || "";
    row.querySelector(".remove-grant").addEventListener("click", () => removeGrantRow(row));
    $("grant-rows").append(row);
    relabelGrantRows();
    return row;
  }

  function removeGrantRow(row) {
    const rows = [...$("grant-rows").children];
    const index = rows.indexOf(row);
    row.remove();
    relabelGrantRows();
    const left = [...$("grant-rows").children];
    // Keep keyboard focus in the list: on the next row's first input, else "Add grant".
    const next = left[Math.min(index, left.length - 1)];
    if (next) next.querySelector(".grant-conn").focus();
    else $("add-grant").focus();
    announce(`Grant ${index + 1} removed.`);
  }

  function relabelGrantRows() {
    // Screen readers hear "Connection, grant 2"; sighted users see the numbered list.
    [...$("grant-rows").children].forEach((row, i) => {
      row.querySelector(".remove-grant").setAttribute("aria-label", `Remove grant ${i + 1}`);
      row.querySelector(".grant-conn").setAttribute("aria-label", `Connection, grant ${i + 1}`);
      row.querySelector(".grant-source").setAttribute("aria-label", `Source, grant ${i + 1}`);
    });
  }

  // --- edit: the create form, filled with the token and sent as a PATCH -------------------

  function setFormMode(token) {
    state.editing = token;
    const submit = document.querySelector("#create-form button[type=submit]");
    $("expiration").closest(".field").hidden = Boolean(token);
    if (token) {
      $("new-title").textContent = `Edit token: ${token.name || "(no name)"}`;
      submit.textContent = "Save changes";
    } else {
      $("new-title").textContent = "Create an API access token";
      submit.textContent = "Create token";
    }
  }

  async function showEdit(id) {
    showView("view-new");
    resetCreateForm();
    let token;
    try {
      token = await api("GET", `v3/tokens/${encodeURIComponent(id)}`);
    } catch (exc) {
      if (exc.status !== 401) announce(`Could not load the token: ${exc.message}`);
      return;
    }
    setFormMode(token);
    $("token-name").value = token.name || "";
    for (const box of document.querySelectorAll("#apis input")) {
      box.checked = token.allowed_apis.includes(box.value);
    }
    clear($("grant-rows"));
    for (const grant of token.grants) addGrantRow(grant.connection_name, grant.source);
    if (!token.grants.length) addGrantRow("", "");
    $("referers").value = token.referers.join("\n");
    $("limits").value = token.limits ? JSON.stringify(token.limits) : "";
    focusHeading("new-title");
  }

  function resetCreateForm() {
    const form = $("create-form");
    form.reset();
    clearErrors();
    clear($("grant-rows"));
    addGrantRow("", "");
  }

  function clearErrors() {
    $("create-error").hidden = true;
    $("create-error").textContent = "";
    for (const node of document.querySelectorAll("#create-form .field-error")) {
      node.hidden = true;
      node.textContent = "";
    }
    for (const node of document.querySelectorAll("#create-form [aria-invalid]")) {
      node.removeAttribute("aria-invalid");
    }
    for (const node of document.querySelectorAll("#create-form [data-error-for]")) {
      const extra = node.getAttribute("data-error-for");
      const ids = (node.getAttribute("aria-describedby") || "").split(/\s+/)
        .filter((id) => id && id !== extra);
      if (ids.length) node.setAttribute("aria-describedby", ids.join(" "));
      else node.removeAttribute("aria-describedby");
      node.removeAttribute("data-error-for");
    }
  }

  function markInvalid(inputs, error, message) {
    error.textContent = message;
    error.hidden = false;
    for (const input of inputs) {
      input.setAttribute("aria-invalid", "true");
      const ids = (input.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
      if (!ids.includes(error.id)) ids.unshift(error.id);
      input.setAttribute("aria-describedby", ids.join(" "));
      input.setAttribute("data-error-for", error.id);
    }
    inputs[0].focus();
  }

  function readForm() {
    const rows = [];
    const grants = [];
    for (const row of $("grant-rows").children) {
      const conn = row.querySelector(".grant-conn").value;
      const source = row.querySelector(".grant-source").value;
      // A blank row is a row the person has not filled in yet, not a grant.
      if (!conn.trim() && !source.trim()) continue;
      rows.push(row);
      grants.push({ connection_name: conn, source });
    }
    const refererLines = [];
    const referers = [];
    $("referers").value.split("\n").forEach((line, i) => {
      if (!line.trim()) return;
      refererLines.push(i + 1);
      referers.push(line.trim());
    });
    const body = {
      name: $("token-name").value,
      allowed_apis: [...document.querySelectorAll("#apis input:checked")].map((c) => c.value),
      grants,
      referers,
    };
    const expiration = $("expiration");
    let expirationError = "";
    if (expiration.value) {
      const date = new Date(expiration.value);
      if (Number.isNaN(date.getTime())) expirationError = "enter a complete date and time";
      else body.expiration_date = date.toISOString();
    } else if (expiration.validity && expiration.validity.badInput) {
      expirationError = "the date and time are incomplete; complete them or clear the field";
    }
    let limitsError = "";
    const limitsText = $("limits").value.trim();
    if (limitsText) {
      try {
        body.limits = JSON.parse(limitsText);
      } catch (exc) {
        limitsError = `not JSON (${exc.message}); write e.g. {"rate": [{"requests": 600, "per": "minute"}]}`;
      }
    } else if (state.editing) {
      body.limits = null; // emptied while editing: the token's limits are removed
    }
    return { body, rows, refererLines, expirationError, limitsError };
  }

  function showFieldError(field, message, sent) {
    const checks = [...document.querySelectorAll("#apis input")];
    let m;
    if (field === "name") {
      markInvalid([$("token-name")], $("token-name-error"), message);
    } else if (field === "allowed_apis") {
      markInvalid(checks, $("apis-error"), message);
    } else if ((m = /^grants\[(\d+)\](?:\.(connection_name|source))?/.exec(field)) && sent.rows[+m[1]]) {
      const row = sent.rows[+m[1]];
      const input = m[2] === "source" ? row.querySelector(".grant-source") : row.querySelector(".grant-conn");
      markInvalid([input], row.querySelector(".grant-error"), message);
    } else if (field === "grants" || field.startsWith("grants[")) {
      markInvalid([$("add-grant")], $("grants-error"), message);
    } else if ((m = /^referers(?:\[(\d+)\])?$/.exec(field))) {
      const line = m[1] !== undefined ? sent.refererLines[+m[1]] : undefined;
      markInvalid([$("referers")], $("referers-error"), line ? `Line ${line}: ${message}` : message);
    } else if (field === "expiration_date") {
      markInvalid([$("expiration")], $("expiration-error"), message);
    } else if (field === "limits" || field.startsWith("limits.") || field.startsWith("limits[")) {
      markInvalid([$("limits")], $("limits-error"), message);
    } else {
      return false;
    }
    return true;
  }

  // Every error the server gave, each beside its field; those no field holds go in the
  // form's box. True if at least one was placed beside a field.
  function showServerErrors(exc, sent, verb) {
    const all = exc.errors.length ? exc.errors : [{ field: exc.field, error: exc.message }];
    const loose = [];
    let placed = 0;
    for (const item of all) {
      if (item.field && showFieldError(item.field, item.error, sent)) placed += 1;
      else loose.push(item.error);
    }
    if (loose.length) {
      const box = $("create-error");
      box.textContent = `${verb}: ${loose.join("; ")}${exc.hint && !placed ? ` (${exc.hint})` : ""}`;
      box.hidden = false;
    }
    const first = document.querySelector("#create-form [aria-invalid='true']");
    if (first) first.focus();
    else if (loose.length) {
      $("create-error").setAttribute("tabindex", "-1");
      $("create-error").focus();
    }
    return placed > 0;
  }

  async function createToken(event) {
    event.preventDefault();
    clearErrors();
    const sent = readForm();
    if (sent.expirationError) {
      showFieldError("expiration_date", `expiration_date: ${sent.expirationError}`, sent);
      return;
    }
    if (sent.limitsError) {
      showFieldError("limits", `limits: ${sent.limitsError}`, sent);
      return;
    }
    const submit = event.submitter || null;
    if (submit) submit.disabled = true;
    if (state.editing) {
      await saveEdit(state.editing, sent, submit);
      return;
    }
    try {
      const created = await api("POST", "v3/tokens", sent.body);
      state.created = created;
      state.tokens = [];
      state.loaded = false;
      showCreated(created);
    } catch (exc) {
      if (exc.status === 401) return;
      if (!(exc.status === 400 && exc.field)) {
        const box = $("create-error");
        box.textContent = `The token was not created: ${exc.message}${exc.hint ? ` (${exc.hint})` : ""}`;
        box.hidden = false;
        box.setAttribute("tabindex", "-1");
        box.focus();
      } else if (showServerErrors(exc, sent, "The token was not created")) {
        announce("The token was not created: fix the marked fields.");
      }
    } finally {
      if (submit) submit.disabled = false;
    }
  }

  async function saveEdit(token, sent, submit) {
    const changes = { ...sent.body };
    delete changes.expiration_date; // set only at creation
    try {
      await api("PATCH", `v3/tokens/${encodeURIComponent(token.id)}`, changes);
      state.tokens = [];
      state.loaded = false;
      location.hash = `#token/${encodeURIComponent(token.id)}`;
      announce("Your changes were saved.");
    } catch (exc) {
      if (exc.status === 401) return;
      if (!(exc.status === 400 && exc.field)) {
        const box = $("create-error");
        box.textContent = `The changes were not saved: ${exc.message}${exc.hint ? ` (${exc.hint})` : ""}`;
        box.hidden = false;
        box.setAttribute("tabindex", "-1");
        box.focus();
      } else if (showServerErrors(exc, sent, "The changes were not saved")) {
        announce("The changes were not saved: fix the marked fields.");
      }
    } finally {
      if (submit) submit.disabled = false;
    }
  }

  function showCreated(created) {
    $("created-name").textContent = created.name || "(no name)";
    $("created-secret").value = created.token;
    $("copy-status").textContent = "";
    $("created-detail").href = `#token/${encodeURIComponent(created.id)}`;
    const warnings = $("created-warnings");
    clear(warnings);
    for (const warning of created.warnings || []) {
      warnings.append(el("li", {}, el("strong", {}, "Note: "), warning));
    }
    // replaceState: "Back" must not return to a page that would show the secret again.
    history.replaceState(null, "", "#created");
    showView("view-created");
    focusHeading("created-title");
  }

  function forgetCreated() {
    state.created = null;
    const secret = document.getElementById("created-secret");
    if (secret) secret.value = "";
  }

  // Copy a secret shown once (created or rotated) from ``inputId``, saying how it went.
  async function copyShownSecret(inputId, statusId, what) {
    const input = $(inputId);
    const status = $(statusId);
    try {
      await navigator.clipboard.writeText(input.value);
      status.textContent = "Copied to the clipboard.";
    } catch (_) {
      // No clipboard permission: select it so Ctrl+C / long-press copies it.
      input.focus();
      input.select();
      status.textContent = `Could not copy automatically: the ${what} is selected, press Ctrl+C.`;
    }
  }

  // --- expiration presets: fill the date field (30 or 90 days from now, or never) ----------

  function setExpiryPreset(days) {
    const input = $("expiration");
    if (!days) {
      input.value = "";
      announce("The token will never expire.");
      return;
    }
    const at = new Date(Date.now() + Number(days) * 86400000);
    const pad = (n) => String(n).padStart(2, "0");
    input.value = `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}`
      + `T${pad(at.getHours())}:${pad(at.getMinutes())}`;
    announce(`The token will expire in ${days} days.`);
  }

  // --- wiring -----------------------------------------------------------------------------

  function start() {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => {
      signOut("Signed out.");
      history.replaceState(null, "", "#");
    });
    $("filter").addEventListener("input", renderTokens);
    $("create-form").addEventListener("submit", createToken);
    $("add-grant").addEventListener("click", () => {
      const row = addGrantRow("", "");
      row.querySelector(".grant-conn").focus();
    });
    $("revoke-dialog").addEventListener("close", onRevokeClosed);
    $("copy-secret").addEventListener("click",
      () => copyShownSecret("created-secret", "copy-status", "token"));
    $("copy-rotated").addEventListener("click",
      () => copyShownSecret("rotated-secret", "rotated-copy-status", "secret"));
    $("copy-snippet-curl").addEventListener("click", () => copySnippet("snippet-curl"));
    $("copy-snippet-js").addEventListener("click", () => copySnippet("snippet-js"));
    for (const preset of document.querySelectorAll("[data-expires-days]")) {
      preset.addEventListener("click", () => setExpiryPreset(preset.dataset.expiresDays));
    }
    $("created-done").addEventListener("click", () => { location.hash = "#tokens"; });
    window.addEventListener("hashchange", route);
    // A link to the view already shown gives no hashchange; it should still refresh it.
    document.addEventListener("click", (event) => {
      const link = event.target instanceof Element ? event.target.closest("a[href^='#']") : null;
      if (link && link.getAttribute("href") === location.hash) route();
    });
    // Another tab cannot see our access token, and this one forgets it on leaving.
    window.addEventListener("pagehide", () => signOut(""));
    loadApiChoices();
    route();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
