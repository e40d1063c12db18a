// The AssemblyScript module of qrun's ABI conformance suite: the scripted
// behaviour of plugins/conformance/README.md, written with the SDK.
import {
  Message, Verdict, Level, Err, handle, init, log, config, publishText, setDelay, extendLease,
} from "../../sdk/assemblyscript/qrun";
export { qrun_abi_v1, qrun_alloc, qrun_free, qrun_init, qrun_handle } from "../../sdk/assemblyscript/qrun";

// Lives as long as the instance: the "count" command proves it.
let count: u32 = 0;

function out(s: string): Verdict {
  return publishText("out", s) == 0 ? Verdict.Ack : Verdict.Nack;
}

function orAbsent(v: string | null): string {
  return v === null ? "<absent>" : v;
}

// isInt reports whether s is an optionally signed decimal.
function isInt(s: string): bool {
  if (s.length == 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!(c >= 48 && c <= 57) && !(i == 0 && c == 45 && s.length > 1)) return false;
  }
  return true;
}

function onMessage(m: Message): Verdict {
  const body = m.text();
  const i = body.indexOf(":");
  const cmd = i < 0 ? body : body.substring(0, i);
  const arg = i < 0 ? "" : body.substring(i + 1);
  if (cmd == "verdict") {
    // Any number, bad verdicts included: they are part of the script.
    return isInt(arg) ? <Verdict>I32.parseInt(arg) : Verdict.DeadLetter;
  }
  if (cmd == "trap") unreachable();
  if (cmd == "echo") {
    return publishText("out", arg, m.attrs()) == 0 ? Verdict.Ack : Verdict.Nack;
  }
  if (cmd == "attr") return out(orAbsent(m.attr(arg)));
  if (cmd == "config") return out(orAbsent(config(arg)));
  if (cmd == "id") return out(m.id());
  if (cmd == "attempt") return out(m.attempt().toString());
  if (cmd == "delay") {
    if (!isInt(arg)) return Verdict.DeadLetter;
    setDelay(I64.parseInt(arg));
    return Verdict.Nack;
  }
  if (cmd == "pub") {
    const r = publishText(arg, "x");
    return out(r == 0 ? "ok" : r == Err.Denied ? "denied" : "error");
  }
  if (cmd == "extend") {
    if (!isInt(arg)) return Verdict.DeadLetter;
    return out(extendLease(I64.parseInt(arg)) == 0 ? "ok" : "error");
  }
  if (cmd == "log") {
    log(Level.Info, arg);
    return Verdict.Ack;
  }
  if (cmd == "count") {
    count++;
    return out(count.toString());
  }
  return Verdict.DeadLetter;
}

function setup(): bool {
  const refuse = config("refuse");
  if (refuse === null) return true;
  log(Level.Error, "init failed: refused by config: " + refuse);
  return false;
}

handle(onMessage);
init(setup);
