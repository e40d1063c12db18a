//! The Rust module of qrun's ABI conformance suite: the scripted behaviour of
//! plugins/conformance/README.md, written with the Rust SDK.

use std::cell::Cell;
use std::time::Duration;

use qrun::{Message, Verdict};

thread_local! {
    // Lives as long as the instance: the "count" command proves it.
    static COUNT: Cell<u32> = Cell::new(0);
}

fn out(body: &str) -> Verdict {
    let none: &[(&str, &str)] = &[];
    match qrun::publish("out", body.as_bytes(), none) {
        Ok(()) => Verdict::Ack,
        Err(_) => Verdict::Nack,
    }
}

fn or_absent(v: Option<String>) -> String {
    v.unwrap_or_else(|| "<absent>".to_string())
}

/// The script's word for a failed request.
fn err_word(e: qrun::Error) -> &'static str {
    match e {
        qrun::Error::Denied => "denied",
        qrun::Error::TooLarge => "toolarge",
        qrun::Error::Timeout => "timeout",
        qrun::Error::Connect => "connect",
        qrun::Error::Limit => "limit",
        _ => "error",
    }
}

fn http(url: &str) -> Verdict {
    match qrun::Request::new("POST", url).header("X-Guest", "yes").body("ping").send() {
        Err(e) => out(err_word(e)),
        Ok(resp) => match out(&resp.status.to_string()) {
            Verdict::Ack => out(&String::from_utf8_lossy(&resp.body)),
            v => v,
        },
    }
}

fn httpmany(url: &str) -> Verdict {
    let mut n = 0;
    loop {
        match qrun::Request::new("GET", url).send() {
            Ok(_) => n += 1,
            Err(e) => {
                return match out(&n.to_string()) {
                    Verdict::Ack => out(err_word(e)),
                    v => v,
                }
            }
        }
    }
}

fn retry(url: &str) -> Verdict {
    match qrun::Request::new("GET", url).send() {
        Err(_) => Verdict::Nack,
        Ok(resp) if (200..300).contains(&resp.status) => Verdict::Ack,
        Ok(resp) => qrun::retry_later(&resp),
    }
}

/// The script's word for a failed store or state call.
fn kv_word(e: qrun::Error) -> &'static str {
    match e {
        qrun::Error::Denied => "denied",
        qrun::Error::Invalid => "invalid",
        qrun::Error::TooLarge => "toolarge",
        qrun::Error::Conflict => "conflict",
        qrun::Error::Unsupported => "unsupported",
        _ => "error",
    }
}

/// Publishes a value read from a store or the state, `<absent>`, or the word.
fn out_read(r: Result<Option<Vec<u8>>, qrun::Error>) -> Verdict {
    match r {
        Ok(Some(v)) => out(&String::from_utf8_lossy(&v)),
        Ok(None) => out("<absent>"),
        Err(e) => out(kv_word(e)),
    }
}

/// Publishes "ok", or the error's word.
fn out_ok(r: Result<(), qrun::Error>) -> Verdict {
    match r {
        Ok(()) => out("ok"),
        Err(e) => out(kv_word(e)),
    }
}

/// The store and state commands; None for any other command. Not inlined,
/// so that handle's trivial path (BenchmarkHandle) stays as it was.
#[inline(never)]
fn kv(m: &Message, cmd: &str, arg: &str) -> Option<Verdict> {
    let s = qrun::store("kv");
    Some(match cmd {
        "kvget" => out_read(s.get(arg)),
        "kvset" => out_ok(s.set("k", arg)),
        // A Duration cannot be negative: the SDK cannot send what the host
        // would answer with -4, so the module answers it.
        "kvttl" => match arg.parse::<i64>() {
            Ok(ms) if ms < 0 => out("invalid"),
            Ok(ms) => out_ok(s.set_ttl("k", "t", Duration::from_millis(ms as u64))),
            Err(_) => Verdict::DeadLetter,
        },
        "kvver" => match s.version("k") {
            Ok(v) => out(&v.to_string()),
            Err(e) => out(kv_word(e)),
        },
        "kvcas" => match arg.parse::<u64>() {
            Ok(v) => out_ok(s.compare_and_set("k", v, "cas", Duration::ZERO)),
            Err(_) => Verdict::DeadLetter,
        },
        "kvdel" => out_ok(s.delete("k")),
        "kvincr" => match arg.parse::<i64>() {
            Ok(d) => match s.incr("k", d) {
                Ok(n) => out(&n.to_string()),
                Err(e) => out(kv_word(e)),
            },
            Err(_) => Verdict::DeadLetter,
        },
        "kvadd" => match arg.parse::<i64>() {
            Ok(d) => out_ok(s.add("k", d)),
            Err(_) => Verdict::DeadLetter,
        },
        "kvaddget" => match arg.parse::<i64>() {
            Ok(d) => match out_ok(s.add("k", d)) {
                Verdict::Ack => out_read(s.get("k")),
                v => v,
            },
            Err(_) => Verdict::DeadLetter,
        },
        "kvrw" => match s.set("k", arg) {
            Ok(()) => out_read(s.get("k")),
            Err(e) => out(kv_word(e)),
        },
        "kvother" => out_read(qrun::store("other").get("k")),
        "state" => {
            if let Verdict::Ack = out_read(m.state()) {
                out_ok(m.set_state(arg));
            }
            Verdict::Nack
        }
        _ => return None,
    })
}

fn handle(m: &Message) -> Verdict {
    let body = match std::str::from_utf8(m.body) {
        Ok(s) => s,
        Err(_) => return Verdict::DeadLetter,
    };
    let (cmd, arg) = match body.find(':') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, ""),
    };
    match cmd {
        "verdict" => match arg.parse::<i32>() {
            // Any number, bad verdicts included: they are part of the script.
            Ok(n) => Verdict::Code(n),
            Err(_) => Verdict::DeadLetter,
        },
        "trap" => panic!("trap requested"),
        "echo" => match qrun::publish("out", arg.as_bytes(), &m.attrs()) {
            Ok(()) => Verdict::Ack,
            Err(_) => Verdict::Nack,
        },
        "attr" => out(&or_absent(m.attr(arg))),
        "config" => out(&or_absent(qrun::config(arg))),
        "id" => out(&m.id()),
        "attempt" => out(&m.attempt().to_string()),
        "delay" => match arg.parse::<u64>() {
            Ok(ms) => {
                let _ = qrun::set_delay(Duration::from_millis(ms));
                Verdict::Nack
            }
            Err(_) => Verdict::DeadLetter,
        },
        "deadreason" => qrun::dead_letter_with(arg),
        "nackreason" => qrun::nack_with(arg),
        "pub" => {
            let none: &[(&str, &str)] = &[];
            out(match qrun::publish(arg, b"x", none) {
                Ok(()) => "ok",
                Err(qrun::Error::Denied) => "denied",
                Err(_) => "error",
            })
        }
        "extend" => match arg.parse::<u64>() {
            Ok(ms) => out(match qrun::extend_lease(Duration::from_millis(ms)) {
                Ok(()) => "ok",
                Err(_) => "error",
            }),
            Err(_) => Verdict::DeadLetter,
        },
        "log" => {
            qrun::info(arg);
            Verdict::Ack
        }
        "count" => {
            let n = COUNT.with(|c| {
                c.set(c.get() + 1);
                c.get()
            });
            out(&n.to_string())
        }
        "http" => http(arg),
        "httpmany" => httpmany(arg),
        "retry" => retry(arg),
        _ => kv(m, cmd, arg).unwrap_or(Verdict::DeadLetter),
    }
}

fn init() -> Result<(), String> {
    match qrun::config("refuse") {
        Some(v) => Err(format!("refused by config: {}", v)),
        None => Ok(()),
    }
}

qrun::handler!(handle, init = init);
