// CallsApp's communities and public accounts: plain posts over the JSON API of
// docs/protocols/callsapp.md ("Communities and public accounts"), NOT end-to-end encrypted.
// Live changes come as `community.*` frames on the sync socket (the client emits them as
// "community" events); opening a community reads it all again, so a lost push costs nothing.
import { api, enc } from "./api.js";

const BASE = "/messaging/api/communities";

const KIND = { community: "Community", public: "Public account" };
const ACCESS = { open: "open to everyone", approval: "by approval" };

export class Communities {
  /** `ui`: { root, el, icon, time, openPanel, userId } from the page. */
  constructor(ui) {
    this.ui = ui;
    this.openId = null; // the community on screen
    this.view = null; // its last GET
    this.unread = 0;
  }

  $(sel) {
    return this.ui.root.querySelector(sel);
  }

  // --- the list

  async showList() {
    this.openId = null;
    this.view = null;
    this.ui.openPanel("communities");
    this.setUnread(0);
    const { mine, open } = await api("GET", BASE);
    const { el } = this.ui;
    const row = (c, joinable) =>
      el(
        "li",
        { dataset: { communityId: c.community_id }, "data-testid": "community" },
        el(
          "button",
          { type: "button", class: "link ca-member-name", "data-action": "community-open", "data-testid": "community-open" },
          el("strong", { text: c.name }),
          el("small", { class: "ca-hint", text: ` · ${KIND[c.kind]} · ${c.members} member${c.members === 1 ? "" : "s"}` }),
        ),
        c.role === "admin" ? el("span", { class: "badge", text: "admin" }) : null,
        c.role === "pending" ? el("span", { class: "badge", text: "request waiting" }) : null,
        c.muted ? el("span", { class: "badge", text: "muted" }) : null,
        joinable ? el("button", { type: "button", class: "button small", "data-action": "community-join", "data-testid": "join" }, c.kind === "public" ? "Subscribe" : "Join") : null,
      );
    const empty = (text) => [el("li", { class: "ca-hint", text })];
    this.$("[data-my-communities]").replaceChildren(...(mine.length ? mine.map((c) => row(c, false)) : empty("None yet: join one below, or create one.")));
    this.$("[data-open-communities]").replaceChildren(...(open.length ? open.map((c) => row(c, true)) : empty("No other open community.")));
  }

  setUnread(n) {
    this.unread = n;
    const badge = this.$("[data-communities-unread]");
    badge.hidden = !n;
    badge.textContent = String(n);
    badge.setAttribute("aria-label", `${n} new posts`);
  }

  // --- one community

  /** `known`: what a join answered (a pending request cannot read the community). */
  async open(communityId, known = null) {
    let view;
    try {
      view = await api("GET", `${BASE}/${enc(communityId)}`);
    } catch (err) {
      if (err.status !== 404) throw err;
      // By approval and not (yet) a member: nothing to read; a link still lets one ask.
      const unknown = { name: "Members only", description: "This community admits members by approval.", kind: "community", access: "approval", members: 0, role: null, muted: false };
      view = { ...unknown, ...(known || {}), community_id: communityId, can_post: false, posts: null };
    }
    this.openId = communityId;
    this.view = view;
    this.ui.openPanel("community");
    this.drawHead();
    this.drawPosts();
    this.$("[data-community-admin]").hidden = true;
  }

  drawHead() {
    const v = this.view;
    const joined = v.role === "admin" || v.role === "member";
    this.$("[data-community-name]").textContent = v.name;
    this.$("[data-community-sub]").textContent = `${KIND[v.kind]} · ${ACCESS[v.access]}${v.posts ? ` · ${v.members} member${v.members === 1 ? "" : "s"}` : ""}`;
    this.$("[data-community-description]").textContent = v.description || "";
    const mute = this.$("[data-action=community-mute]");
    mute.hidden = !joined;
    mute.setAttribute("aria-pressed", String(v.muted));
    mute.title = v.muted ? "Muted: new posts are not pushed to you. Unmute" : "Mute new posts";
    mute.querySelector(".icon").className = `icon icon-${v.muted ? "bell-off" : "bell"}`;
    mute.querySelector("[data-mute-label]").textContent = v.muted ? "Unmute" : "Mute";
    this.$("[data-action=community-admin]").hidden = v.role !== "admin";
    this.$("[data-form=community-post]").hidden = !v.can_post;
    const readonly = this.$("[data-community-readonly]");
    readonly.hidden = v.can_post || !joined;
    readonly.textContent = v.kind === "public" ? "A public account: only its admins post here." : "";
    this.$("[data-community-pending]").hidden = v.role !== "pending";
    this.$("[data-action=community-join]").hidden = Boolean(v.role);
    this.$("[data-action=community-join]").textContent = v.access === "approval" ? "Ask to join" : v.kind === "public" ? "Subscribe" : "Join";
    this.$("[data-action=community-leave]").hidden = !v.role;
    this.$("[data-action=community-leave]").textContent = v.role === "pending" ? "Withdraw request" : "Leave";
  }

  drawPosts() {
    const list = this.$("[data-posts]");
    const posts = this.view.posts || [];
    list.replaceChildren(...posts.map((p) => this.postNode(p)));
    if (!posts.length) list.append(this.emptyNote());
    list.scrollTop = list.scrollHeight;
  }

  emptyNote() {
    const text = this.view.posts ? "No posts yet." : "Only members read this community.";
    return this.ui.el("li", { class: "ca-hint", "data-empty": true, text });
  }

  postNode(p) {
    const { el, icon, time } = this.ui;
    const mine = p.author === this.ui.userId();
    const mayDelete = mine || this.view.role === "admin";
    return el(
      "li",
      { class: `ca-post${mine ? " mine" : ""}`, dataset: { postId: String(p.post_id) }, "data-testid": "post" },
      el("div", { class: "ca-post-head" }, el("strong", { class: "ca-sender", text: mine ? "You" : p.author_name }), el("time", { class: "ca-hint", datetime: p.created_at, text: time(p.created_at) })),
      el("div", { class: "ca-body", text: p.text }),
      el(
        "div",
        { class: "ca-post-actions" },
        el(
          "button",
          { type: "button", class: "ca-like", "data-action": "post-like", "data-testid": "like", "aria-pressed": String(p.liked), title: p.liked ? "Unlike" : "Like" },
          icon("heart"),
          el("span", { "data-testid": "like-count", text: String(p.likes) }),
          el("span", { class: "sr", text: " likes" }),
        ),
        mayDelete ? el("button", { type: "button", class: "link ca-delete", "data-action": "post-delete", "data-testid": "post-delete" }, "Delete") : null,
      ),
    );
  }

  postEl(postId) {
    return this.$(`[data-posts] [data-post-id="${Number(postId)}"]`);
  }

  setLikes(postId, likes, liked) {
    const node = this.postEl(postId);
    if (!node) return;
    node.querySelector("[data-testid=like-count]").textContent = String(likes);
    if (liked !== undefined) {
      const button = node.querySelector("[data-action=post-like]");
      button.setAttribute("aria-pressed", String(liked));
      button.title = liked ? "Unlike" : "Like";
    }
  }

  /** A `community.*` frame from the sync socket. */
  onFrame(frame) {
    const shown = !this.$("[data-panel=community]").hidden;
    const here = shown && frame.community_id === this.openId && this.view?.posts;
    if (frame.type === "community.post") {
      if (!here) {
        if (frame.post.author !== this.ui.userId()) this.setUnread(this.unread + 1);
        return;
      }
      if (this.postEl(frame.post.post_id)) return; // our own, already drawn from the answer
      this.$("[data-posts] [data-empty]")?.remove();
      const list = this.$("[data-posts]");
      const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
      list.append(this.postNode(frame.post));
      if (atBottom) list.scrollTop = list.scrollHeight;
    } else if (here && frame.type === "community.post_deleted") {
      this.postEl(frame.post_id)?.remove();
    } else if (here && frame.type === "community.likes") {
      this.setLikes(frame.post_id, frame.likes);
    }
  }

  // --- admin

  async drawAdmin() {
    const box = this.$("[data-community-admin]");
    const { el } = this.ui;
    const { members, requests } = await api("GET", `${BASE}/${enc(this.openId)}/members`);
    this.$("[data-form=community-access] select").value = this.view.access;
    this.$("[data-community-link]").textContent = `${location.origin}/messaging/?community=${enc(this.openId)}`;
    const person = (m, ...buttons) =>
      el("li", { dataset: { userId: m.user_id }, "data-testid": "community-person" }, el("span", { class: "ca-member-name", text: m.user_id === this.ui.userId() ? "You" : m.display_name }), m.role === "admin" ? el("span", { class: "badge", text: "admin" }) : null, ...buttons);
    const button = (action, text, cls = "secondary") => el("button", { type: "button", class: `button small ${cls}`, "data-action": action, "data-testid": action }, text);
    this.$("[data-community-requests]").replaceChildren(
      ...(requests.length ? requests.map((m) => person(m, button("member-approve", "Approve", ""), button("member-refuse", "Refuse"))) : [el("li", { class: "ca-hint", text: "None waiting." })]),
    );
    this.$("[data-community-members]").replaceChildren(
      ...members.map((m) =>
        m.user_id === this.ui.userId() ? person(m) : person(m, m.role === "admin" ? null : button("member-make_admin", "Make admin"), button("member-remove", "Remove", "danger")),
      ),
    );
    box.hidden = false;
  }

  // --- actions, forms

  async act(action, target) {
    const communityId = target.closest("[data-community-id]")?.dataset.communityId || this.openId;
    switch (action) {
      case "communities":
        await this.showList();
        return true;
      case "new-community": {
        const form = this.$("[data-form=new-community]");
        form.hidden = !form.hidden;
        if (!form.hidden) form.name.focus();
        return true;
      }
      case "community-open":
        await this.open(communityId);
        return true;
      case "community-join":
        await this.open(communityId, await api("POST", `${BASE}/${enc(communityId)}/join`));
        return true;
      case "community-leave":
        if (!window.confirm(this.view.role === "pending" ? "Withdraw your request?" : `Leave ${this.view.name}?`)) return true;
        await api("POST", `${BASE}/${enc(communityId)}/leave`);
        await this.showList();
        return true;
      case "community-mute":
        this.view = { ...this.view, ...(await api("PUT", `${BASE}/${enc(communityId)}/mute`, { muted: !this.view.muted })) };
        this.drawHead();
        return true;
      case "community-admin":
        if (this.$("[data-community-admin]").hidden) await this.drawAdmin();
        else this.$("[data-community-admin]").hidden = true;
        return true;
      case "post-like": {
        const postId = target.closest("[data-post-id]").dataset.postId;
        const liked = target.getAttribute("aria-pressed") !== "true";
        const answer = await api(liked ? "PUT" : "DELETE", `${BASE}/${enc(communityId)}/posts/${postId}/like`);
        this.setLikes(postId, answer.likes, answer.liked);
        return true;
      }
      case "post-delete": {
        const node = target.closest("[data-post-id]");
        if (!window.confirm("Delete this post? It is deleted from the server.")) return true;
        await api("DELETE", `${BASE}/${enc(communityId)}/posts/${node.dataset.postId}`);
        node.remove();
        return true;
      }
      default:
        if (action.startsWith("member-")) {
          const userId = target.closest("[data-user-id]").dataset.userId;
          await api("POST", `${BASE}/${enc(communityId)}/members/${enc(userId)}`, { action: action.slice("member-".length) });
          await this.drawAdmin();
          return true;
        }
        return false;
    }
  }

  /** A form of ours: true when handled. Errors go to the form's error line. */
  async submit(form) {
    const name = form.dataset.form;
    if (name === "new-community") {
      const made = await api("POST", BASE, {
        name: form.name.value.trim(),
        description: form.description.value.trim(),
        kind: form.kind.value,
        access: form.access.value,
      });
      form.reset();
      form.hidden = true;
      await this.open(made.community_id);
    } else if (name === "join-community") {
      const joined = await api("POST", `${BASE}/join`, { name: form.name.value.trim() });
      form.reset();
      await this.open(joined.community_id, joined);
    } else if (name === "community-post") {
      const text = form.text.value;
      if (!text.trim()) return true;
      const posted = await api("POST", `${BASE}/${enc(this.openId)}/posts`, { text });
      form.text.value = "";
      this.onFrame({ type: "community.post", community_id: this.openId, post: posted });
    } else {
      return false;
    }
    return true;
  }

  async setAccess(access) {
    this.view = { ...this.view, ...(await api("PUT", `${BASE}/${enc(this.openId)}/access`, { access })) };
    this.drawHead();
    await this.drawAdmin();
  }
}
