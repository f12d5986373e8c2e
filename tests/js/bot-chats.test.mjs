// node --test tests/js/: what the CallsApp page does with bot chats, DOM-free
// (static/messaging/js/bot-chats.js): the username rules the server applies, merging a live
// message into an open chat, and the bot chat list as messages arrive. The page itself runs
// in the browser test (tests/e2e/test_callsapp_bots.py).
import { test } from "node:test";
import assert from "node:assert/strict";

import { usernameProblem, withMessage, chatsWithFrame, NOT_E2E } from "../../static/messaging/js/bot-chats.js";

const msg = (id, text, { fromBot = false, at = `2026-12-01T06:00:0${id}Z` } = {}) => ({ message_id: id, from_bot: fromBot, text, created_at: at });

test("a username follows the server's rules", () => {
  assert.equal(usernameProblem("echo_bot"), null);
  assert.equal(usernameProblem("EchoBOT"), null);
  assert.match(usernameProblem("abot"), /5 to 32/);
  assert.match(usernameProblem(`${"a".repeat(30)}bot`), /5 to 32/);
  assert.match(usernameProblem("echo-bot"), /letters, digits/);
  assert.match(usernameProblem("echoer"), /end in "bot"/);
});

test("a live message is added once, in order", () => {
  const chat = [msg(1, "hello")];
  const once = withMessage(chat, msg(2, "echo: hello", { fromBot: true }));
  assert.deepEqual(once.map((m) => m.text), ["hello", "echo: hello"]);
  // The same message again (our own send's answer, then its push): no duplicate.
  assert.equal(withMessage(once, msg(2, "echo: hello", { fromBot: true })), once);
  // One that arrives late goes where its time puts it.
  const late = withMessage(once, msg(3, "between", { at: "2026-12-01T06:00:01.5Z" }));
  assert.deepEqual(late.map((m) => m.text), ["hello", "between", "echo: hello"]);
  assert.deepEqual(chat.map((m) => m.text), ["hello"]); // not changed in place
});

test("the chat list moves a chat with a new message to the top", () => {
  const chats = [
    { bot: { username: "a_bot", name: "A" }, last_text: "old a", last_at: "2026-12-01T05:00:00Z", blocked: false },
    { bot: { username: "b_bot", name: "B" }, last_text: "old b", last_at: "2026-12-01T04:00:00Z", blocked: false },
  ];
  const frame = { type: "bot.message", bot: "b_bot", message: msg(9, "new b", { fromBot: true }) };
  const next = chatsWithFrame(chats, frame);
  assert.deepEqual(next.map((c) => [c.bot.username, c.last_text]), [["b_bot", "new b"], ["a_bot", "old a"]]);
  // A bot not yet in the list (a chat started on another page) is added with what is known.
  const other = chatsWithFrame(chats, { type: "bot.message", bot: "c_bot", message: msg(4, "hi") });
  assert.deepEqual(other[0], { bot: { username: "c_bot", name: "c_bot", description: "" }, last_text: "hi", last_at: msg(4, "hi").created_at, blocked: false });
  // With the bot's profile (the page's open chat), the list shows its name.
  const named = chatsWithFrame(chats, { type: "bot.message", bot: "c_bot", message: msg(4, "hi") }, { username: "c_bot", name: "Cee", description: "" });
  assert.equal(named[0].bot.name, "Cee");
});

test("an older message arriving late does not replace the chat's last one", () => {
  // The user's own send: its answer may come after the bot's reply was pushed.
  const reply = { type: "bot.message", bot: "a_bot", message: msg(2, "echo: hello", { fromBot: true }) };
  const mine = { type: "bot.message", bot: "a_bot", message: msg(1, "hello") };
  const chats = chatsWithFrame(chatsWithFrame([], reply), mine);
  assert.equal(chats.length, 1);
  assert.equal(chats[0].last_text, "echo: hello");
});

test("the notice says who can read a bot chat", () => {
  assert.match(NOT_E2E, /not end-to-end encrypted/i);
  assert.match(NOT_E2E, /bot and its owner/);
});
