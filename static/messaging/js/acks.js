// CallsApp's delayed ack (TCP's delayed ACK, for the sync stream): a stored frame's ack waits
// a little, so that the acks of frames that come close together go as one (they are
// cumulative) and an ack can ride on the device's next `send` instead of a frame of its own.
// A sender's "delivered" tick is the commonest case: its ack goes with the next message.
// DOM-free.
//
// Nothing is lost by waiting: an ack not sent (the socket closed first) is made good by the
// next hello{last_seq}, and the server redelivers at worst what the client dedupes anyway.

// Well under what a person notices on a tick; a backlog or a busy group acks at once.
export const ACK_DELAY_MS = 250;
export const ACK_MAX_HELD = 16;

export class DelayedAck {
  /** `sendAck(seq)` sends an `ack{seq}` frame of its own. */
  constructor(sendAck, { delayMs = ACK_DELAY_MS, maxHeld = ACK_MAX_HELD } = {}) {
    this.sendAck = sendAck;
    this.delayMs = delayMs;
    this.maxHeld = maxHeld;
    this.seq = undefined; // the highest stored seq not acked yet
    this.held = 0;
    this.timer = null;
  }

  /** Frame `seq` is stored; `now`: ack without waiting (the backlog after a hello). */
  stored(seq, { now = false } = {}) {
    if (this.seq === undefined || seq > this.seq) this.seq = seq;
    this.held += 1;
    if (now || this.held >= this.maxHeld) this.flush();
    else if (this.timer === null) this.timer = setTimeout(() => this.flush(), this.delayMs);
  }

  /** The seq a `send` frame should carry as its `ack`, or undefined: it is then acked. */
  take() {
    const seq = this.seq;
    this.reset();
    return seq;
  }

  flush() {
    const seq = this.take();
    if (seq !== undefined) this.sendAck(seq);
  }

  /** The socket closed: its hello will say where the client is. */
  reset() {
    clearTimeout(this.timer);
    this.timer = null;
    this.seq = undefined;
    this.held = 0;
  }
}
