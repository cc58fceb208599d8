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
  const state = { tokens: [], loaded: false, created: null, revokeTarget: null, view: "" };

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
    if (hash === "new") {
      showView("view-new");
      resetCreateForm();
      focusHeading("new-title");
    } else if (hash === "created" && state.created) {
      showView("view-created");
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
    } catch (exc) {
      if (exc.status !== 401) announce(`Could not load the tokens: ${exc.message}`);
    }
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
      const revoke = token.state === "active"
        ? el("button", {
          type: "button", className: "button danger small",
          "aria-label": `Revoke ${name}`, onclick: () => openRevoke(token),
        }, "Revoke")
        : null;
      body.append(el("tr", { role: "row", dataset: { tokenId: token.id } },
        cell("Name", detail),
        cell("Id", el("code", {}, token.id)),
        cell("APIs", apisText(token.allowed_apis)),
        cell("Grants", grantsSummary(token.grants)),
        cell("Referers", referersText(token.referers)),
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
    ];
    if (token.revoked_at) rows.push(["Revoked", formatTime(token.revoked_at, "")]);
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
    revoke.hidden = token.state !== "active";
    revoke.onclick = () => openRevoke(token);
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
    return { body, rows, refererLines, expirationError };
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
    } else {
      return false;
    }
    return true;
  }

  async function createToken(event) {
    event.preventDefault();
    clearErrors();
    const sent = readForm();
    if (sent.expirationError) {
      showFieldError("expiration_date", `expiration_date: ${sent.expirationError}`, sent);
      return;
    }
    const submit = event.submitter || null;
    if (submit) submit.disabled = true;
    try {
      const created = await api("POST", "v3/tokens", sent.body);
      state.created = created;
      state.tokens = [];
      state.loaded = false;
      showCreated(created);
    } catch (exc) {
      if (exc.status === 401) return;
      if (!(exc.status === 400 && exc.field && showFieldError(exc.field, exc.message, sent))) {
        const box = $("create-error");
        box.textContent = `The token was not created: ${exc.message}${exc.hint ? ` (${exc.hint})` : ""}`;
        box.hidden = false;
        box.setAttribute("tabindex", "-1");
        box.focus();
      } else {
        announce("The token was not created: fix the marked field.");
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

  async function copySecret() {
    const input = $("created-secret");
    const status = $("copy-status");
    try {
      await navigator.clipboard.writeText(input.value);
      status.textContent = "Copied to the clipboard.";
    } catch (_) {
      // No clipboard permission: select it so Ctrl+C / long-press copies it.
      input.focus();
      input.select();
      status.textContent = "Could not copy automatically: the token is selected, press Ctrl+C.";
    }
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
    $("copy-secret").addEventListener("click", copySecret);
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
