// CallsApp bot chats, DOM-free: the rules and list logic the page (bots.js) draws from.
// Bot chats are plain text on the server, NOT end-to-end encrypted (docs/protocols/callsapp.md,
// "Bots"); live messages come as `bot.message` frames, and opening a chat reads it again.

export const NOT_E2E = "Not end-to-end encrypted: this bot and its owner can read these messages";

/** Why a bot username is refused (the server's rules, said before asking it), or null. */
export function usernameProblem(username) {
  if (username.length < 5 || username.length > 32) return "A bot's username has 5 to 32 characters.";
  if (!/^[A-Za-z0-9_]+$/.test(username)) return "A bot's username has only letters, digits and underscores.";
  if (!username.toLowerCase().endsWith("bot")) return 'A bot\'s username must end in "bot".';
  return null;
}

// By time (the server's ISO 8601 strings differ in form, so as dates), then by id.
const order = (a, b) => Date.parse(a.created_at) - Date.parse(b.created_at) || a.message_id - b.message_id;

/** `messages` with `message` in its place; the same array when it is there already. */
export function withMessage(messages, message) {
  if (messages.some((m) => m.message_id === message.message_id)) return messages;
  return [...messages, message].sort(order);
}

/**
 * The chat list after a `bot.message` frame: that chat first, with its last message. `profile`:
 * the bot's, when the page has it (a chat it just started); else what the list knew.
 */
export function chatsWithFrame(chats, frame, profile = null) {
  const known = chats.find((c) => c.bot.username === frame.bot);
  const bot = profile || known?.bot || { username: frame.bot, name: frame.bot, description: "" };
  // A message older than the chat's last (our own send's answer, after the bot's reply
  // was pushed) changes nothing but the name.
  if (known && Date.parse(frame.message.created_at) < Date.parse(known.last_at)) {
    return chats.map((c) => (c === known ? { ...c, bot } : c));
  }
  const updated = { ...(known || { blocked: false }), bot, last_text: frame.message.text, last_at: frame.message.created_at };
  return [updated, ...chats.filter((c) => c !== known)];
}
