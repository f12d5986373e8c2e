// CallsApp's bots: the bots panel (make, edit, re-key and delete your bots; open a chat with
// a bot by its exact username) and bot chats, over the JSON API of docs/protocols/callsapp.md
// ("Bots"). NOT end-to-end encrypted, and every bot chat says so. Live messages come as
// `bot.message` frames on the sync socket (the client emits them as "bot" events); opening a
// chat reads it all again, so a lost push costs nothing. The rules are in bot-chats.js.
import { api, enc } from "./api.js";
import { NOT_E2E, chatsWithFrame, usernameProblem, withMessage } from "./bot-chats.js";

const MINE = "/messaging/api/bots";
const CHATS = "/messaging/api/bot-chats";

export class Bots {
  /** `ui`: { root, el, icon, time, openPanel } from the page. */
  constructor(ui) {
    this.ui = ui;
    this.chats = []; // the bot chat list, latest first
    this.unread = new Map(); // username -> messages from the bot not seen yet
    this.open = null; // { bot, blocked, messages } of the chat on screen
  }

  $(sel) {
    return this.ui.root.querySelector(sel);
  }

  shown(panel) {
    return !this.$(`[data-panel=${panel}]`).hidden;
  }

  // --- the chat list in the sidebar

  async loadChats() {
    this.chats = (await api("GET", CHATS)).chats;
    this.drawChats();
  }

  drawChats() {
    const { el, icon } = this.ui;
    const row = (c) => {
      const unread = this.unread.get(c.bot.username) || 0;
      return el(
        "li",
        { dataset: { botUsername: c.bot.username }, "data-testid": "bot-chat-item" },
        el(
          "button",
          { type: "button", class: "ca-room", "data-action": "bot-chat-open" },
          el("span", { class: "ca-avatar", "aria-hidden": "true" }, icon("bot")),
          el(
            "span",
            { class: "ca-room-main" },
            el("strong", { class: "ca-room-name" }, c.bot.name, " ", el("span", { class: "badge", "data-testid": "bot-badge", text: "bot" })),
            el("small", { class: "ca-room-sub", text: c.blocked ? "Stopped" : c.last_text }),
          ),
          unread ? el("span", { class: "ca-unread", "aria-label": `${unread} unread`, text: String(unread) }) : null,
        ),
      );
    };
    this.$("[data-bot-chat-list]").replaceChildren(...this.chats.map(row));
  }

  // --- the bots panel

  async showPanel() {
    this.ui.openPanel("bots");
    const { bots } = await api("GET", MINE);
    const { el } = this.ui;
    const button = (action, text, cls = "secondary") => el("button", { type: "button", class: `button small ${cls}`, "data-action": action, "data-testid": action }, text);
    const row = (b) =>
      el(
        "li",
        { dataset: { botId: String(b.bot_id) }, "data-testid": "my-bot" },
        el("span", { class: "ca-member-name" }, el("strong", { text: b.name }), el("small", { class: "ca-hint", text: ` @${b.username} · ${b.chats} chat${b.chats === 1 ? "" : "s"}` })),
        button("bot-edit", "Edit"),
        button("bot-token-new", "New token"),
        button("bot-delete", "Delete", "danger"),
      );
    this.$("[data-my-bots]").replaceChildren(...(bots.length ? bots.map(row) : [el("li", { class: "ca-hint", text: "None yet." })]));
    this.bots = bots;
  }

  showToken(name, token) {
    this.$("[data-bot-token-name]").textContent = name;
    this.$("[data-bot-token]").textContent = token;
    this.$("[data-bot-token-box]").hidden = false;
  }

  editForm(b) {
    const { el } = this.ui;
    return el(
      "form",
      { class: "ca-form", dataset: { form: "edit-bot", botId: String(b.bot_id) }, "data-testid": "edit-bot-form" },
      el("label", { text: "Name" }),
      el("input", { name: "name", required: true, maxlength: "64", value: b.name }),
      el("label", { text: "Description" }),
      el("textarea", { name: "description", rows: "2", maxlength: "512", text: b.description }),
      el("button", { type: "submit" }, "Save"),
      el("p", { class: "ca-error", "data-error": true, role: "alert", hidden: true }),
    );
  }

  // --- one chat

  async openChat(username) {
    const view = await api("GET", `${CHATS}/${enc(username)}`);
    this.open = view;
    this.unread.delete(view.bot.username);
    this.ui.openPanel("bot-chat");
    this.drawHead();
    this.drawMessages();
    this.drawChats();
    this.$("[data-bot-messages]").scrollTop = 1e9;
  }

  drawHead() {
    const v = this.open;
    this.$("[data-bot-chat-name]").textContent = v.bot.name;
    this.$("[data-bot-chat-username]").textContent = `@${v.bot.username}`;
    this.$("[data-bot-chat-description]").textContent = v.bot.description || "";
    this.$("[data-bot-not-e2e]").textContent = NOT_E2E;
    const block = this.$("[data-action=bot-block]");
    block.setAttribute("aria-pressed", String(v.blocked));
    block.title = v.blocked ? "Restart this bot" : "Stop this bot: it can no longer write to you";
    block.querySelector("[data-block-label]").textContent = v.blocked ? "Restart bot" : "Stop bot";
    this.$("[data-form=bot-message]").hidden = v.blocked;
    this.$("[data-bot-blocked]").hidden = !v.blocked;
  }

  drawMessages() {
    const { el, time } = this.ui;
    const list = this.$("[data-bot-messages]");
    const node = (m) =>
      el(
        "li",
        { class: `ca-post${m.from_bot ? "" : " mine"}`, dataset: { messageId: String(m.message_id) }, "data-testid": m.from_bot ? "bot-reply" : "bot-mine" },
        el("div", { class: "ca-post-head" }, el("strong", { class: "ca-sender", text: m.from_bot ? this.open.bot.name : "You" }), el("time", { class: "ca-hint", datetime: m.created_at, text: time(m.created_at) })),
        el("div", { class: "ca-body", text: m.text }),
      );
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.replaceChildren(...this.open.messages.map(node));
    if (!this.open.messages.length) list.append(el("li", { class: "ca-hint", text: "Say hello: the bot answers once you have written to it." }));
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  /** A `bot.message` frame from the sync socket. */
  onFrame(frame) {
    const here = this.shown("bot-chat") && this.open?.bot.username === frame.bot;
    if (here) {
      this.open = { ...this.open, messages: withMessage(this.open.messages, frame.message) };
      this.drawMessages();
    } else if (frame.message.from_bot) {
      this.unread.set(frame.bot, (this.unread.get(frame.bot) || 0) + 1);
    }
    this.chats = chatsWithFrame(this.chats, frame, here ? this.open.bot : null);
    this.drawChats();
  }

  // --- actions, forms

  async act(action, target) {
    const botId = target.closest("[data-bot-id]")?.dataset.botId;
    const bot = this.bots?.find((b) => String(b.bot_id) === botId);
    switch (action) {
      case "bots":
        await this.showPanel();
        return true;
      case "new-bot": {
        const form = this.$("[data-form=new-bot]");
        form.hidden = !form.hidden;
        if (!form.hidden) form.username.focus();
        return true;
      }
      case "bot-edit": {
        const li = target.closest("li");
        const open = li.querySelector("[data-form=edit-bot]");
        if (open) open.remove();
        else li.append(this.editForm(bot));
        return true;
      }
      case "bot-token-new":
        if (!window.confirm(`A new token for @${bot.username}? The current one stops working at once.`)) return true;
        this.showToken(bot.name, (await api("POST", `${MINE}/${botId}/token`)).token);
        return true;
      case "bot-delete":
        if (!window.confirm(`Delete @${bot.username}? Its chats go too, for everyone who talked to it.`)) return true;
        await api("DELETE", `${MINE}/${botId}`);
        await this.showPanel();
        return true;
      case "bot-token-copy":
        await navigator.clipboard.writeText(this.$("[data-bot-token]").textContent);
        target.textContent = "Copied";
        return true;
      case "bot-token-hide":
        this.$("[data-bot-token-box]").hidden = true;
        this.$("[data-bot-token]").textContent = "";
        this.$("[data-action=bot-token-copy]").textContent = "Copy";
        return true;
      case "bot-chat-open":
        await this.openChat(target.closest("[data-bot-username]").dataset.botUsername);
        return true;
      case "bot-block": {
        const blocked = !this.open.blocked;
        const head = await api("PUT", `${CHATS}/${enc(this.open.bot.username)}/block`, { blocked });
        this.open = { ...this.open, blocked: head.blocked };
        this.drawHead();
        await this.loadChats();
        return true;
      }
      case "bot-chat-delete":
        if (!window.confirm(`Delete your chat with ${this.open.bot.name}? It is deleted from the server, for the bot too.`)) return true;
        await api("DELETE", `${CHATS}/${enc(this.open.bot.username)}`);
        this.open = null;
        this.ui.openPanel("bots");
        await Promise.all([this.showPanel(), this.loadChats()]);
        return true;
      default:
        return false;
    }
  }

  /** A form of ours: true when handled. Errors go to the form's error line. */
  async submit(form) {
    const name = form.dataset.form;
    if (name === "find-bot") {
      await this.openChat(form.username.value.trim());
      form.reset();
    } else if (name === "new-bot") {
      const username = form.username.value.trim();
      const problem = usernameProblem(username);
      if (problem) throw new Error(problem);
      const made = await api("POST", MINE, { username, name: form.name.value.trim(), description: form.description.value.trim() });
      form.reset();
      form.hidden = true;
      await this.showPanel();
      this.showToken(made.name, made.token);
    } else if (name === "edit-bot") {
      await api("PUT", `${MINE}/${form.dataset.botId}`, { name: form.name.value.trim(), description: form.description.value.trim() });
      await this.showPanel();
    } else if (name === "bot-message") {
      const text = form.text.value;
      if (!text.trim()) return true;
      const sent = await api("POST", `${CHATS}/${enc(this.open.bot.username)}/messages`, { text });
      form.text.value = "";
      this.onFrame({ type: "bot.message", bot: this.open.bot.username, message: sent });
    } else {
      return false;
    }
    return true;
  }
}
