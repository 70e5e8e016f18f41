// Dashboard state shared by the modules: the last snapshot, the table's sort and filter,
// the live channel's timers, the history pager, the node detail and the chat.
export const state = {
  snapshot: null,
  nodesById: new Map(),
  skewMs: 0,
  sort: { key: "name", dir: 1 },
  filter: "",
  ws: null,
  retry: 0,
  reconnectTimer: null,
  pollTimer: null,
  history: { offset: 0, total: 0, filters: { agent_id: "", model: "", status: "" } },
  detailId: null,
  detailTimer: null,
  chat: { messages: [], abort: null },
};

// Exposed for tests and measurements: how many snapshots were drawn and how long the last took.
export const stats = { renders: 0, lastRenderMs: 0, lastPayloadBytes: 0, channel: "connecting" };
window.__dashboard = stats;

export function nodeName(id) {
  const node = state.nodesById.get(id);
  return node ? node.display_name : (id ? id.slice(0, 8) : "–");
}
