// The AssemblyScript module of qrun's ABI conformance suite: the scripted
// behaviour of plugins/conformance/README.md, written with the SDK.
import {
  Message, Verdict, Level, Err, handle, init, log, config, publishText, setDelay, extendLease,
  fetch, retryLater, deadLetterWith, nackWith, KV, Value,
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

// errWord names a failed request's error as the script does.
function errWord(e: i32): string {
  if (e == Err.Denied) return "denied";
  if (e == Err.TooLarge) return "toolarge";
  if (e == Err.Timeout) return "timeout";
  if (e == Err.Connect) return "connect";
  if (e == Err.Limit) return "limit";
  return "error";
}

function http(url: string): Verdict {
  const h = new Map<string, string>();
  h.set("X-Guest", "yes");
  const r = fetch("POST", url, h, String.UTF8.encode("ping"));
  if (r.error < 0) return out(errWord(r.error));
  const v = out(r.status.toString());
  if (v != Verdict.Ack) return v;
  return out(r.text());
}

function httpmany(url: string): Verdict {
  let n: u32 = 0;
  while (true) {
    const r = fetch("", url);
    if (r.error < 0) {
      const v = out(n.toString());
      return v != Verdict.Ack ? v : out(errWord(r.error));
    }
    n++;
  }
  return Verdict.Nack;
}

function retry(url: string): Verdict {
  const r = fetch("", url);
  if (r.error < 0) return Verdict.Nack;
  if (r.status >= 200 && r.status < 300) return Verdict.Ack;
  return retryLater(r.status);
}

// kvWord names a failed store or state call's error as the script does.
function kvWord(e: i32): string {
  if (e == Err.Denied) return "denied";
  if (e == Err.Invalid) return "invalid";
  if (e == Err.TooLarge) return "toolarge";
  if (e == Err.Conflict) return "conflict";
  if (e == Err.Unsupported) return "unsupported";
  return "error";
}

// outRead publishes a value read from a store or the state, "<absent>", or
// the error's word.
function outRead(v: Value): Verdict {
  if (v.found) return out(v.text());
  return out(v.error == Err.NotFound ? "<absent>" : kvWord(v.error));
}

// outOK publishes "ok" for 0, else the error's word.
function outOK(r: i32): Verdict {
  return out(r == 0 ? "ok" : kvWord(r));
}

// The one store the consumer is granted.
const kv = new KV("kv");

// kvCommand runs the store and state commands; -1 for any other command.
function kvCommand(m: Message, cmd: string, arg: string): i32 {
  if (cmd == "kvget") return outRead(kv.get(arg));
  if (cmd == "kvset") return outOK(kv.setText("k", arg));
  if (cmd == "kvttl") return isInt(arg) ? outOK(kv.setText("k", "t", I64.parseInt(arg))) : Verdict.DeadLetter;
  if (cmd == "kvver") {
    const v = kv.version("k");
    return out(v < 0 ? kvWord(<i32>v) : v.toString());
  }
  if (cmd == "kvcas") return isInt(arg) ? outOK(kv.casText("k", I64.parseInt(arg), "cas")) : Verdict.DeadLetter;
  if (cmd == "kvdel") return outOK(kv.delete("k"));
  if (cmd == "kvincr") {
    if (!isInt(arg)) return Verdict.DeadLetter;
    const c = kv.incr("k", I64.parseInt(arg));
    return out(c.error < 0 ? kvWord(c.error) : c.value.toString());
  }
  if (cmd == "kvadd") return isInt(arg) ? outOK(kv.add("k", I64.parseInt(arg))) : Verdict.DeadLetter;
  if (cmd == "kvaddget") {
    if (!isInt(arg)) return Verdict.DeadLetter;
    const v = outOK(kv.add("k", I64.parseInt(arg)));
    return v != Verdict.Ack ? v : outRead(kv.get("k"));
  }
  if (cmd == "kvrw") {
    const r = kv.setText("k", arg);
    return r < 0 ? out(kvWord(r)) : outRead(kv.get("k"));
  }
  if (cmd == "kvother") return outRead(new KV("other").get("k"));
  if (cmd == "state") {
    if (outRead(m.state()) == Verdict.Ack) outOK(m.setStateText(arg));
    return Verdict.Nack;
  }
  return -1;
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
  if (cmd == "deadreason") return deadLetterWith(arg);
  if (cmd == "nackreason") return nackWith(arg);
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
  if (cmd == "http") return http(arg);
  if (cmd == "httpmany") return httpmany(arg);
  if (cmd == "retry") return retry(arg);
  const v = kvCommand(m, cmd, arg);
  return v < 0 ? Verdict.DeadLetter : <Verdict>v;
}

function setup(): bool {
  const refuse = config("refuse");
  if (refuse === null) return true;
  log(Level.Error, "init failed: refused by config: " + refuse);
  return false;
}

handle(onMessage);
init(setup);
