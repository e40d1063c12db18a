// __NAME__: a qrun message handler written with the AssemblyScript SDK.
//
// It greets each message in the log and, when config "forward_to" names a
// queue, publishes the body there with attribute greeted_by=__NAME__. An
// empty body is dead-lettered: no retry can give it content.
import { Message, Verdict, Level, handle, init, log, config, publish } from "./qrun";
export { qrun_abi_v1, qrun_alloc, qrun_free, qrun_init, qrun_handle } from "./qrun";

// Read once per instance: config does not change during its life.
let forwardTo: string | null = null;

function setup(): bool {
  forwardTo = config("forward_to");
  return true;
}

function onMessage(m: Message): Verdict {
  if (m.length == 0) {
    log(Level.Warn, "empty body: nothing to greet");
    return Verdict.DeadLetter;
  }
  log(Level.Info, "hello, " + m.text());
  const queue = forwardTo;
  if (queue !== null) {
    const attrs = new Map<string, string>();
    attrs.set("greeted_by", "__NAME__");
    const err = publish(queue, m.body.buffer, attrs);
    if (err != 0) {
      log(Level.Warn, "forward: error " + err.toString());
      return Verdict.Nack; // retried with backoff
    }
  }
  return Verdict.Ack;
}

init(setup);
handle(onMessage);
