// The Chat view: a streamed /v1/chat/completions console that shows which node answered.
import { $, el } from "./dom.js";
import { getToken } from "./api.js";
import { state, nodeName } from "./state.js";

function chatMessage(role, text, meta) {
  const body = el("div", { class: "text", text });
  const box = el("div", { class: `msg ${role}` }, el("div", { class: "who", text: meta || role }), body);
  $("chat-log").append(box);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return { box, body };
}

async function sendChat() {
  const model = $("chat-model").value;
  const prompt = $("chat-prompt").value.trim();
  if (!model || !prompt || state.chat.abort) return;
  $("chat-prompt").value = "";
  state.chat.messages.push({ role: "user", content: prompt });
  chatMessage("user", prompt, "you");
  const answer = chatMessage("assistant", "", `${model} · waiting for a node…`);
  answer.box.id = "chat-current";
  const abort = new AbortController();
  state.chat.abort = abort;
  $("chat-send").disabled = true;
  $("chat-stop").disabled = false;
  let text = "";
  try {
    const headers = { "Content-Type": "application/json" };
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers, signal: abort.signal,
      body: JSON.stringify({ model, messages: state.chat.messages, stream: true }),
    });
    const nodeId = resp.headers.get("x-router-node");
    const who = `${model} · ${nodeId ? `served by ${nodeName(nodeId)}` : "no node"}`;
    answer.box.querySelector(".who").textContent = who;
    answer.box.dataset.node = nodeId || "";
    $("chat-node").textContent = nodeId ? `Last answer served by ${nodeName(nodeId)}` : "";
    if (!resp.ok) {
      let message = `HTTP ${resp.status}`;
      try { const data = await resp.json(); message = (data.error && (data.error.message || data.error)) || message; } catch { /* keep status */ }
      if (resp.status === 401) message += " (this router needs an API key for /v1; the admin token works too: use \"Admin token\" at the top)";
      throw new Error(message);
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 1);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        let event;
        try { event = JSON.parse(data); } catch { continue; }
        if (event.error) throw new Error(event.error.message || String(event.error));
        const piece = event.choices && event.choices[0] && event.choices[0].delta && event.choices[0].delta.content;
        if (piece) {
          text += piece;
          answer.body.textContent = text;
          $("chat-log").scrollTop = $("chat-log").scrollHeight;
        }
      }
    }
    answer.box.dataset.done = "true";
    state.chat.messages.push({ role: "assistant", content: text });
  } catch (e) {
    answer.box.classList.add("error");
    answer.box.dataset.done = "true";
    answer.body.textContent = text + (abort.signal.aborted ? " [stopped]" : `${text ? "\n" : ""}Error: ${e.message}`);
    if (text) state.chat.messages.push({ role: "assistant", content: text });
    else state.chat.messages.pop();
  } finally {
    answer.box.removeAttribute("id");
    state.chat.abort = null;
    $("chat-stop").disabled = true;
    $("chat-send").disabled = !(state.snapshot && state.snapshot.overview.models.length);
  }
}
$("chat-form").addEventListener("submit", (ev) => { ev.preventDefault(); sendChat(); });
$("chat-prompt").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); sendChat(); } });
$("chat-stop").addEventListener("click", () => state.chat.abort && state.chat.abort.abort());
$("chat-clear").addEventListener("click", () => { state.chat.messages = []; $("chat-log").replaceChildren(); $("chat-node").textContent = ""; });
