"""A message that waited for its room key is decrypted again when the key comes; a delete
for everyone processed meanwhile must stay (the retry used to run beside the sync queue
and store the message back over the redaction)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.test_callsapp import open_callsapp, open_room, send, start_chat
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e

RACE = """async ({ eventId }) => {
  const c = window.callsapp;
  const ev = window.frames_seen
    .flatMap((m) => Object.entries(m.sync?.rooms?.join || {}))
    .flatMap(([roomId, r]) => (r.timeline?.events || []).map((e) => ({ roomId, e })))
    .find(({ e }) => e.event_id === eventId);
  const { roomId, e: raw } = ev;
  // The message as if it had come before its key: undecrypted, its ciphertext kept.
  const record = await c.history.event(eventId);
  await c.history.putEvent({ ...record, kind: "utd", raw, sealed: null }, null);
  // The redaction's frame, then the key's retry, as the machine's callback would ask it
  // from inside a later frame. The retry's decryption waits until the redaction is done,
  // so a retry beside the queue stores its message after the redaction.
  let redacted;
  const done = new Promise((resolve) => (redacted = resolve));
  const onRedaction = c.onRedaction.bind(c);
  c.onRedaction = async (...args) => {
    await onRedaction(...args);
    redacted();
  };
  const decrypt = c.machine.decryptRoomEvent.bind(c.machine);
  c.machine.decryptRoomEvent = async (...args) => {
    await done;
    return decrypt(...args);
  };
  const redaction = {
    type: "m.room.redaction",
    event_id: "$redaction-" + eventId,
    sender: raw.sender,
    redacts: eventId,
    origin_server_ts: raw.origin_server_ts + 1,
    content: { redacts: eventId },
  };
  const timeline = { events: [redaction] };
  c.enqueueSync({ seq: null, sync: { rooms: { join: { [roomId]: { timeline } } } } });
  await Promise.all([c.retryUndecrypted(), done]);
  await c.syncQueue;
  const after = await c.history.event(eventId);
  return { redacted: Boolean(after?.redacted), sealed: Boolean(after?.sealed) };
}"""


def test_a_retry_of_undecrypted_messages_keeps_a_redaction_processed_meanwhile(
    live_asgi, new_context
):
    pia = UserFactory(profile__nickname="Pia")
    rex = UserFactory(profile__nickname="Rex")
    p = open_callsapp(new_context(), live_asgi, pia)
    r = open_callsapp(new_context(), live_asgi, rex)
    # What Rex's socket brings, kept for the ciphertext of the message below.
    r.evaluate(
        """() => {
          const c = window.callsapp;
          window.frames_seen = [];
          const enqueue = c.enqueueSync.bind(c);
          c.enqueueSync = (msg) => {
            window.frames_seen.push(msg);
            return enqueue(msg);
          };
        }"""
    )
    start_chat(p, "rex")
    send(p, "delete me")
    open_room(r, "Pia")
    expect(r.locator(".ca-msg.theirs", has_text="delete me")).to_be_visible(timeout=20000)
    event_id = r.evaluate(
        """async () => {
          const c = window.callsapp;
          for (const room of await c.history.rooms()) {
            for (const e of await c.history.timeline(room.room_id)) {
              if (e.content?.body === "delete me") return e.event_id;
            }
          }
          return null;
        }"""
    )
    assert event_id
    after = r.evaluate(RACE, {"eventId": event_id})
    # Deleted, and its plaintext gone from the device (not stored back by the retry).
    assert after["redacted"] and not after["sealed"], after
