// The admin token (kept in session storage) and the JSON API calls that use it.
import { $, notify } from "./dom.js";

const TOKEN_KEY = "llmRouterAdminToken";
// Called when the user gives a new token: the live channel reconnects with it.
const tokenListeners = [];
export const onNewToken = (fn) => tokenListeners.push(fn);
const newToken = () => tokenListeners.forEach((fn) => fn());

export const getToken = () => sessionStorage.getItem(TOKEN_KEY) || "";
const setToken = (t) => (t ? sessionStorage.setItem(TOKEN_KEY, t) : sessionStorage.removeItem(TOKEN_KEY));

export function askToken(reason) {
  const dialog = $("token-dialog");
  $("token-reason").textContent = reason || "Management actions need the router's admin token. It is kept in this browser tab only (session storage).";
  $("token-input").value = "";
  return new Promise((resolve) => {
    const done = (value) => {
      $("token-form").removeEventListener("submit", onSubmit);
      $("token-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const onSubmit = (ev) => {
      ev.preventDefault();
      const value = $("token-input").value.trim();
      if (value) setToken(value);
      done(value || null);
    };
    const onCancel = (ev) => { ev.preventDefault(); done(null); };
    $("token-form").addEventListener("submit", onSubmit);
    $("token-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    $("token-input").focus();
  });
}
$("token-button").addEventListener("click", async () => {
  const token = await askToken();
  if (token) { notify("Admin token stored for this tab.", "ok"); newToken(); }
});
$("token-forget").addEventListener("click", () => {
  setToken("");
  $("token-dialog").close();
  notify("Admin token forgotten.", "info");
});

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = {};
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  if (resp.status === 204) return null;
  let data = null;
  try { data = await resp.json(); } catch { data = null; }
  if (!resp.ok) {
    const err = data && data.error;
    const message = typeof err === "string" ? err : (err && err.message) || resp.statusText || `HTTP ${resp.status}`;
    throw new ApiError(resp.status, message);
  }
  return data;
}

// Reads: when the router needs the admin token for reads too, ask for it once.
let askingForReads = false;
export async function read(path) {
  try {
    return await api("GET", path);
  } catch (e) {
    if (e.status === 401 && !askingForReads) {
      askingForReads = true;
      notify("This router requires the admin token to read the dashboard.", "error");
      const token = await askToken("This router requires the admin token even to read the dashboard.");
      askingForReads = false;
      if (token) { newToken(); return api("GET", path); }
    }
    throw e;
  }
}

export async function adminAction(label, method, path, body) {
  let token = getToken();
  if (!token) token = await askToken(`"${label}" changes the router: it needs the admin token.`);
  if (!token) {
    notify(`Refused: "${label}" needs the admin token, and none was given.`, "error");
    return undefined;
  }
  try {
    const result = await api(method, path, body);
    notify(`${label}: done.`, "ok");
    return result === null ? true : result;
  } catch (e) {
    if (e.status === 401) {
      setToken("");
      notify(`Refused: the router did not accept the admin token (${e.message}). Enter it again to retry.`, "error");
    } else {
      notify(`${label} failed: ${e.message}`, "error");
    }
    return undefined;
  }
}

export function confirmDialog(text) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (value) => {
      $("confirm-ok").removeEventListener("click", onOk);
      $("confirm-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      dialog.close();
      resolve(value);
    };
    const onOk = () => done(true);
    const onCancel = (ev) => { ev.preventDefault(); done(false); };
    $("confirm-ok").addEventListener("click", onOk);
    $("confirm-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
  });
}
